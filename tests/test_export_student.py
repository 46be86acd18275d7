"""tools/export_student.py: a DistillRCNN training checkpoint becomes a plain detectron2 config +
student-only checkpoint that stock detectron2 loads, in a process that never imports nd_det, and
that detects exactly what DistillRCNN detects in eval mode."""

import functools
import http.server
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading

import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.utils.events import EventStorage

from nd_det.config import add_backbone_config
from nd_det.config import load_config as load_distill_cfg
from nd_det.errors import FileError
from nd_det.export import export_student
from nd_det.export.cli import main
from nd_det.modeling import DistillRCNN

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    random_batch,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

CONFIG = config_path("R50_from_R101_nd.yaml")
EXPORT_TOOL = os.path.join(REPO, "tools", "export_student.py")
# test images are 96x128 and the test size is 80: both sides really resize
TEST_SIZE = ["INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "120"]
# a MobileNetV2 student (torchvision's, nd-det's builder) at half width, from random init
MOBILENETV2 = [
    "MODEL.BACKBONE.NAME",
    "build_torchvision_fpn_backbone",
    "MODEL.TORCHVISION.ARCH",
    "mobilenet_v2",
    "MODEL.TORCHVISION.NORM",
    "GN",
    "MODEL.TORCHVISION.FREEZE_AT",
    "0",
    "MODEL.TORCHVISION.WIDTH_MULT",
    "0.5",
    "MODEL.FPN.IN_FEATURES",
    "['c2', 'c3', 'c4', 'c5']",
]

# Runs in a fresh interpreter that refuses to import nd_det: stock detectron2 only, the way a
# deployment would use the export (DefaultPredictor, and DefaultTrainer.test + COCOEvaluator as
# detectron2's tools/train_net.py --eval-only does).
STOCK_DETECTRON2_SCRIPT = r"""
import importlib.abc
import json
import os
import sys


class RefuseNdDet(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nd_det":
            raise ImportError(name + " imported by the plain-detectron2 process")
        return None


sys.meta_path.insert(0, RefuseNdDet())

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor, DefaultTrainer
from detectron2.evaluation import COCOEvaluator


def load_export(folder):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(folder, "config.yaml"))
    cfg.MODEL.WEIGHTS = os.path.join(folder, cfg.MODEL.WEIGHTS)
    return cfg


spec = json.load(open(sys.argv[1]))
out = {"predictions": {}, "models": {}}
for name, folder in spec["exports"].items():
    cfg = load_export(folder)
    predictor = DefaultPredictor(cfg)
    predictions = []
    for path in spec["images"]:
        found = predictor(read_image(path, format="BGR"))["instances"].to("cpu")
        predictions.append({"boxes": found.pred_boxes.tensor, "scores": found.scores,
                            "classes": found.pred_classes})
    out["predictions"][name] = predictions
    saved = torch.load(cfg.MODEL.WEIGHTS, map_location="cpu")["model"]
    state = predictor.model.state_dict()
    out["models"][name] = {
        "meta_architecture": type(predictor.model).__name__,
        "backbone": type(predictor.model.backbone).__module__,
        "same_keys": sorted(state) == sorted(saved),
        "same_values": all(torch.equal(v, saved[k]) for k, v in state.items() if k in saved),
    }

coco = spec["coco"]
register_coco_instances("export_val", {}, coco["json"], coco["images"])
cfg = load_export(spec["exports"][coco["export"]])
cfg.DATASETS.TEST = ("export_val",)
cfg.DATALOADER.NUM_WORKERS = 0
model = DefaultTrainer.build_model(cfg)
DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
evaluator = COCOEvaluator("export_val", output_dir=coco["output_dir"])
results = DefaultTrainer.test(cfg, model, evaluators=[evaluator])
out["coco"] = {task: dict(metrics) for task, metrics in results.items()}

out["nd_det_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "nd_det")
assert "nd_det" not in sys.modules, out["nd_det_modules"]
torch.save(out, spec["result"])
"""


def _env(threads=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _start(cmd, cwd, threads=None):
    return subprocess.Popen(
        cmd, cwd=cwd, env=_env(threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc):
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _train_and_checkpoint(cfg, folder):
    """One DistillRCNN training step, then a checkpoint saved the way detectron2's trainer
    saves one (model + optimizer + scheduler + iteration).  Returns the model and the file."""
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    model.train()
    with EventStorage(0):
        losses = model(random_batch(seed=0, empty=(1,)))
        assert "loss_reviewkd" in losses and "loss_nd" in losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        scheduler.step()
    folder.mkdir(parents=True, exist_ok=True)
    DetectionCheckpointer(model, str(folder), optimizer=optimizer, scheduler=scheduler).save(
        "model_0000001", iteration=1
    )
    return model, str(folder / "model_0000001.pth")


def _detect(model, cfg, image_paths):
    """The reference: what DefaultPredictor does around a model, written out: read the file in
    INPUT.FORMAT, resize the shortest edge to INPUT.MIN_SIZE_TEST (longest <= MAX_SIZE_TEST),
    float CHW tensor, detections rescaled to the original size."""
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    model.eval()
    found = []
    with torch.no_grad():
        for path in image_paths:
            image = read_image(path, format=cfg.INPUT.FORMAT)
            height, width = image.shape[:2]
            resized = resize.get_transform(image).apply_image(image)
            assert resized.shape[:2] != (height, width)  # the resize is really exercised
            tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
            inst = model([{"image": tensor, "height": height, "width": width}])[0]["instances"]
            found.append(
                {
                    "boxes": inst.pred_boxes.tensor,
                    "scores": inst.scores,
                    "classes": inst.pred_classes,
                }
            )
    return found


def _predict(cfg, image_paths):
    """DefaultPredictor detections (boxes, scores, classes) of each image."""
    predictor = DefaultPredictor(cfg)
    found = []
    for path in image_paths:
        inst = predictor(read_image(path, format="BGR"))["instances"].to("cpu")
        found.append(
            {"boxes": inst.pred_boxes.tensor, "scores": inst.scores, "classes": inst.pred_classes}
        )
    return predictor.model, found


def _assert_same_detections(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert len(a["scores"]) == len(b["scores"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
        assert torch.equal(a["classes"], b["classes"])
    assert sum(len(a["scores"]) for a in ours) > 0, "no detections: the comparison would be empty"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny R50_from_R101_nd run whose student is a ResNet-18 (detectron2's own
    build_resnet_fpn_backbone): its training checkpoint, the DistillRCNN detections (eval mode)
    on three image files, and the overrides."""
    root = tmp_path_factory.mktemp("export")
    opts = tiny_distill_opts(str(root)) + TEST_SIZE
    cfg = load_distill_cfg(CONFIG, opts)
    write_teacher_checkpoint(cfg)
    write_random_class_means(cfg)
    model, weights = _train_and_checkpoint(cfg, root / "train")
    assert isinstance(model, DistillRCNN) and model.teacher is not None
    json_file, image_dir = write_tiny_coco(root / "val", num_images=3, seed=2)
    images = sorted(str(image_dir / name) for name in os.listdir(image_dir))
    return {
        "root": root,
        "opts": opts,
        "weights": weights,
        "images": images,
        "coco_json": str(json_file),
        "coco_images": str(image_dir),
        "reference": _detect(model, cfg, images),
    }


@pytest.fixture(scope="module")
def deployed(trained):
    """The checkpoint exported twice: by the command-line tool and by the API, with the config
    it was trained with; both loaded and evaluated by stock detectron2 in a subprocess that
    never imports nd_det.  Also runs the tool once on a missing checkpoint, alongside."""
    root = trained["root"]
    tool = [sys.executable, EXPORT_TOOL, "--config-file", CONFIG]
    export_cli = _start(
        tool
        + ["--weights", trained["weights"], "--output", str(root / "export_cli")]
        + trained["opts"],
        cwd=root,
    )
    missing = str(root / "no_such_run" / "model_final.pth")
    missing_cli = _start(
        tool + ["--weights", missing, "--output", str(root / "never")] + trained["opts"],
        cwd=root,
        threads=1,
    )  # fails before any compute
    export_student(
        load_distill_cfg(CONFIG, trained["opts"]), trained["weights"], str(root / "export_api")
    )
    export_cli, missing_cli = _finish(export_cli), _finish(missing_cli)
    assert export_cli.returncode == 0, (export_cli.stdout + export_cli.stderr)[-4000:]

    script = root / "stock_detectron2.py"
    script.write_text(STOCK_DETECTRON2_SCRIPT)
    spec = {
        "exports": {name: str(root / f"export_{name}") for name in ("cli", "api")},
        "images": trained["images"],
        "coco": {
            "json": trained["coco_json"],
            "images": trained["coco_images"],
            "export": "cli",
            "output_dir": str(root / "coco_eval"),
        },
        "result": str(root / "stock_result.pth"),
    }
    (root / "spec.json").write_text(json.dumps(spec))
    stock = _run([sys.executable, str(script), str(root / "spec.json")], cwd=root)
    assert stock.returncode == 0, (stock.stdout + stock.stderr)[-4000:]
    return {
        "cli": export_cli,
        "missing_cli": missing_cli,
        "missing": missing,
        "stock": torch.load(spec["result"], map_location="cpu", weights_only=True),
    }


@pytest.mark.parametrize("name", ["cli", "api"])
def test_stock_detectron2_detects_what_distill_rcnn_detects(trained, deployed, name):
    _assert_same_detections(deployed["stock"]["predictions"][name], trained["reference"])
    model = deployed["stock"]["models"][name]
    assert model == {
        "meta_architecture": "GeneralizedRCNN",
        "backbone": "detectron2.modeling.backbone.fpn",
        "same_keys": True,
        "same_values": True,
    }
    assert deployed["stock"]["nd_det_modules"] == []


def test_exported_files_hold_the_student_only(trained, deployed):
    folder = trained["root"] / "export_cli"
    assert sorted(os.listdir(folder)) == ["config.yaml", "model_final.pth"]
    assert not [p for p in os.listdir(trained["root"]) if ".partial-" in p or ".old-" in p]
    text = (folder / "config.yaml").read_text()
    assert "DISTILL" not in text and "TORCHVISION" not in text and "nd_det" not in text
    plain = yaml.safe_load(text)
    assert plain["MODEL"]["META_ARCHITECTURE"] == "GeneralizedRCNN"
    assert plain["MODEL"]["WEIGHTS"] == "model_final.pth"
    assert plain["MODEL"]["BACKBONE"]["NAME"] == "build_resnet_fpn_backbone"
    assert plain["INPUT"]["MIN_SIZE_TEST"] == 80  # the overrides given to the tool are kept

    exported = torch.load(folder / "model_final.pth", map_location="cpu", weights_only=True)
    assert list(exported) == ["model"]  # no optimizer, scheduler or iteration
    assert not [k for k in exported["model"] if k.startswith("distill_terms") or "teacher" in k]
    training = torch.load(trained["weights"], map_location="cpu", weights_only=True)
    assert {"optimizer", "scheduler", "iteration"} <= set(training)
    student = {k: v for k, v in training["model"].items() if not k.startswith("distill_terms.")}
    assert len(student) < len(training["model"])  # the ABF modules were there to drop
    assert sorted(exported["model"]) == sorted(student)
    for key, value in student.items():
        assert torch.equal(exported["model"][key], value), key
    stdout = deployed["cli"].stdout
    assert f"Exported the student to {folder}: config.yaml, model_final.pth" in stdout
    assert (
        f"Left out: {len(training['model']) - len(student)} distillation-module tensors "
        "(distill_terms.*), training state ['iteration', 'optimizer', 'scheduler']"
    ) in stdout


def test_missing_checkpoint_is_one_line_exit_2_from_the_tool(trained, deployed):
    proc = deployed["missing_cli"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ERROR: --weights {deployed['missing']}: file not found; point it at an existing "
        "weights file (.pkl or .pth) or a detectron2:// / https:// URL"
    )
    assert "Traceback" not in proc.stderr
    assert not (trained["root"] / "never").exists()


def test_stock_coco_evaluation_of_the_export(trained, deployed):
    metrics = deployed["stock"]["coco"]["bbox"]
    assert {"AP", "AP50", "AP75"} <= set(metrics)
    # the evaluator's detections are those of the exported model on the same images
    with open(trained["root"] / "coco_eval" / "coco_instances_results.json") as f:
        detections = json.load(f)
    with open(trained["coco_json"]) as f:
        image_ids = {img["id"]: img["file_name"] for img in json.load(f)["images"]}
    predictions = deployed["stock"]["predictions"]["cli"]
    for path, expected in zip(trained["images"], predictions):
        ours = [d for d in detections if image_ids[d["image_id"]] == os.path.basename(path)]
        ours.sort(key=lambda d: -d["score"])
        scores = torch.tensor([d["score"] for d in ours])
        torch.testing.assert_close(scores, expected["scores"], rtol=1e-5, atol=1e-6)
        boxes = expected["boxes"].clone()
        boxes[:, 2:] -= boxes[:, :2]  # XYXY -> COCO's XYWH
        torch.testing.assert_close(
            torch.tensor([d["bbox"] for d in ours]).reshape(-1, 4), boxes, rtol=1e-5, atol=1e-3
        )


def test_mobilenetv2_student_keeps_its_keys_and_says_so(trained, tmp_path, capsys):
    opts = trained["opts"] + MOBILENETV2
    cfg = load_distill_cfg(CONFIG, opts)
    torch.manual_seed(1)
    distill_rcnn = build_model(cfg)
    assert isinstance(distill_rcnn, DistillRCNN)
    DetectionCheckpointer(distill_rcnn, str(tmp_path)).save("mv2", iteration=0)
    weights = str(tmp_path / "mv2.pth")
    out = tmp_path / "export_mv2"
    assert main(["--config-file", CONFIG, "--weights", weights, "--output", str(out)] + opts) == 0
    printed = capsys.readouterr().out
    assert (
        "NOTE: the student's backbone build_torchvision_fpn_backbone exists only in nd-det"
        in printed
    )
    assert "`import nd_det.modeling` (registers the backbone)" in printed

    text = (out / "config.yaml").read_text()
    assert "import nd_det.modeling" in text.split("CUDNN_BENCHMARK")[0]  # the yaml's header too
    plain = yaml.safe_load(text)
    assert plain["MODEL"]["BACKBONE"]["NAME"] == "build_torchvision_fpn_backbone"
    assert plain["MODEL"]["TORCHVISION"]["ARCH"] == "mobilenet_v2"
    assert plain["MODEL"]["TORCHVISION"]["WIDTH_MULT"] == 0.5
    assert "DISTILL" not in plain["MODEL"]
    with pytest.raises(KeyError, match="MODEL.TORCHVISION"):
        get_cfg().merge_from_file(str(out / "config.yaml"))  # why the note is needed

    deploy_cfg = add_backbone_config(get_cfg())
    deploy_cfg.merge_from_file(str(out / "config.yaml"))
    deploy_cfg.MODEL.WEIGHTS = str(out / deploy_cfg.MODEL.WEIGHTS)
    model, found = _predict(deploy_cfg, trained["images"])
    assert type(model).__name__ == "GeneralizedRCNN"
    _assert_same_detections(found, _detect(distill_rcnn, cfg, trained["images"]))


def _export_args(trained, output, weights=None, flags=(), overrides=()):
    return (
        [
            "--config-file",
            CONFIG,
            "--weights",
            weights or trained["weights"],
            "--output",
            str(output),
        ]
        + list(flags)
        + trained["opts"]
        + list(overrides)
    )


def _error_of(capsys, argv) -> str:
    capsys.readouterr()  # drop what earlier calls printed
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_files_that_are_not_checkpoints(trained, tmp_path, capsys):
    text_file = tmp_path / "notes.pth"
    text_file.write_text("this is not a checkpoint\n")
    line = _error_of(capsys, _export_args(trained, tmp_path / "out", str(text_file)))
    assert line.startswith(f"ERROR: --weights {text_file} is not a detectron2 checkpoint (")
    assert line.endswith(
        "give the .pth a detectron2 trainer wrote (e.g. <OUTPUT_DIR>/model_final.pth)"
    )

    means = trained["root"] / "class_means.pth"  # a torch file, but a class-means table
    line = _error_of(capsys, _export_args(trained, tmp_path / "out", str(means)))
    assert line.startswith(f"ERROR: --weights {means} is not a detectron2 checkpoint (")
    assert not (tmp_path / "out").exists()


def test_config_mistakes(trained, tmp_path, capsys):
    line = _error_of(
        capsys,
        _export_args(trained, tmp_path / "out", overrides=["MODEL.DISTILL.NO_SUCH_KEY", "1"]),
    )
    assert line == (
        "ERROR: command-line overrides: Non-existent key: MODEL.DISTILL.NO_SUCH_KEY; "
        "check it against nd_det/config.py and detectron2's config reference"
    )
    missing = str(tmp_path / "no_such.yaml")
    args = _export_args(trained, tmp_path / "out")
    args[args.index(CONFIG)] = missing
    assert _error_of(capsys, args) == (
        f"ERROR: --config-file {missing}: {missing} not found in {tmp_path}"
    )
    assert not (tmp_path / "out").exists()


def test_detectron2_pkl_weights(trained, tmp_path):
    """A checkpoint in the detectron2 model-zoo .pkl format (numpy arrays) exports too."""
    state = torch.load(trained["weights"], map_location="cpu", weights_only=True)["model"]
    pkl = tmp_path / "student.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(
            {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "a detectron2 user"},
            f,
        )
    result = export_student(
        load_distill_cfg(CONFIG, trained["opts"]), str(pkl), str(tmp_path / "out")
    )
    exported = torch.load(result.weights_file, weights_only=True)["model"]
    assert len(result.dropped_modules) > 0 and result.dropped_entries == []
    assert all(torch.equal(v, state[k]) for k, v in exported.items())


def test_checkpoint_of_another_student_names_every_mismatch(trained, tmp_path, capsys):
    checkpoint = torch.load(trained["weights"], map_location="cpu", weights_only=True)
    del checkpoint["model"]["roi_heads.box_head.fc1.bias"]
    checkpoint["model"]["roi_heads.extra_head.weight"] = torch.zeros(3)
    edited = tmp_path / "edited.pth"
    torch.save(checkpoint, edited)
    line = _error_of(
        capsys,
        _export_args(
            trained, tmp_path / "out", str(edited), overrides=["MODEL.ROI_HEADS.NUM_CLASSES", "3"]
        ),
    )
    assert line == (
        f"ERROR: --weights {edited} does not fit the student of the config ("
        "missing keys: roi_heads.box_head.fc1.bias; "
        "unexpected keys: roi_heads.extra_head.weight; "
        "shape mismatches: roi_heads.box_predictor.cls_score.weight (3, 64) in the file vs "
        "(4, 64) in the model, roi_heads.box_predictor.cls_score.bias (3,) in the file vs "
        "(4,) in the model, roi_heads.box_predictor.bbox_pred.weight (8, 64) in the file "
        "vs (12, 64) in the model, ... (4 in all)); give the checkpoint trained with this "
        "config, or the config and KEY VALUE overrides it was trained with"
    )
    assert not (tmp_path / "out").exists()


def test_output_folder_rules(trained, deployed, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trained["root"] / "export_api", out)  # a previous export, with deploy files
    first = torch.load(out / "model_final.pth", weights_only=True)
    (out / "config.yaml").write_text("stale\n")
    for name in ("model.pt2", "model.pt2.json", "model.onnx"):
        (out / name).write_text("an earlier deploy file\n")

    line = _error_of(capsys, _export_args(trained, out))
    assert line == (
        f"ERROR: --output {out} exists; pass --overwrite to replace it, or choose another path"
    )
    assert (out / "config.yaml").read_text() == "stale\n"

    # issue 35.1: --overwrite deleted the deploy files of the folder without a word
    assert main(_export_args(trained, out, flags=["--overwrite"])) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"--overwrite: replacing --output {out} (config.yaml, model.onnx, model.pt2, "
        "model.pt2.json, model_final.pth)"
    )
    assert sorted(os.listdir(out)) == ["config.yaml", "model_final.pth"]
    assert (out / "config.yaml").read_text().startswith("# Student exported by nd-det")
    second = torch.load(out / "model_final.pth", weights_only=True)
    assert all(torch.equal(v, second["model"][k]) for k, v in first["model"].items())

    (out / "train_log.txt").write_text("not part of an export\n")
    line = _error_of(capsys, _export_args(trained, out, flags=["--overwrite"]))
    assert line == f"ERROR: --output {out} holds files not of an export (train_log.txt)"
    assert (out / "train_log.txt").exists() and (out / "model_final.pth").exists()

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    line = _error_of(capsys, _export_args(trained, a_file))
    assert line == f"ERROR: --output {a_file} exists and is not a folder; give a new folder name"
    assert sorted(os.listdir(tmp_path)) == ["a_file", "out"]  # no temporary folder left behind


def test_the_run_folder_is_enough(trained, deployed, tmp_path, capsys):
    """Issue 35.4: the training config without the run's overrides does not fit its checkpoint;
    the run's own config.yaml (written by the trainer, overrides included) is read when
    --config-file is left out, and --weights may be the run folder itself."""
    run = trained["root"] / "train"  # model_0000001.pth and detectron2's last_checkpoint tag
    (run / "config.yaml").write_text(load_distill_cfg(CONFIG, trained["opts"]).dump())
    line = _error_of(
        capsys,
        ["--config-file", CONFIG, "--weights", trained["weights"], "--output", str(tmp_path / "o")],
    )
    assert line.startswith(f"ERROR: --weights {trained['weights']} does not fit the student")
    expected = torch.load(trained["root"] / "export_api" / "model_final.pth", weights_only=True)
    for weights in (str(run), trained["weights"]):
        out = tmp_path / os.path.basename(weights)
        assert main(["--weights", weights, "--output", str(out)]) == 0
        assert f"Config: {run / 'config.yaml'} (the run's own)" in capsys.readouterr().out
        exported = torch.load(out / "model_final.pth", weights_only=True)["model"]
        assert all(torch.equal(v, exported[k]) for k, v in expected["model"].items())
    assert _error_of(
        capsys, ["--weights", str(tmp_path / "x.pth"), "--output", str(tmp_path / "o")]
    ) == (f"ERROR: --config-file is required: no config.yaml of a run next to {tmp_path / 'x.pth'}")


def test_a_failed_write_leaves_nothing_half_written(trained, deployed, tmp_path, monkeypatch):
    cfg = load_distill_cfg(CONFIG, trained["opts"])
    shutil.copytree(trained["root"] / "export_api", tmp_path / "old")
    before = (tmp_path / "old" / "config.yaml").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    for target, overwrite in ((tmp_path / "new", False), (tmp_path / "old", True)):
        with pytest.raises(
            FileError,
            match=(
                rf"--output {target} could not be written: \[Errno 28\] No space left on "
                r"device; the folder was left as it was"
            ),
        ):
            export_student(cfg, trained["weights"], str(target), overwrite=overwrite)
    assert sorted(os.listdir(tmp_path)) == ["old"]
    assert sorted(os.listdir(tmp_path / "old")) == ["config.yaml", "model_final.pth"]
    assert (tmp_path / "old" / "config.yaml").read_bytes() == before


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_weights_from_a_url(trained, tmp_path, monkeypatch):
    """detectron2's checkpointer fetches http(s):// (and detectron2://) weights; a local HTTP
    server stands in for the network here."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "download_cache"))
    folder = os.path.dirname(trained["weights"])
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=folder)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = load_distill_cfg(CONFIG, trained["opts"])
        url = f"http://127.0.0.1:{server.server_address[1]}/model_0000001.pth"
        result = export_student(cfg, url, str(tmp_path / "from_url"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.dropped_entries == ["iteration", "optimizer", "scheduler"]
    exported = torch.load(result.weights_file, weights_only=True)["model"]
    training = torch.load(trained["weights"], weights_only=True)["model"]
    assert all(torch.equal(v, training[k]) for k, v in exported.items())

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{closed_port}/model_final.pth"
    with pytest.raises(FileError, match=rf"--weights {dead}: could not download \("):
        export_student(cfg, dead, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
