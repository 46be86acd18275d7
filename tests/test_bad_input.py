"""The bad-input matrix: each mistake stops with one clear message naming the file/key and the
fix, before training starts and without writing outputs; a few legal oddities must just work.

See docs/reliability.md for the table of cases."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from nd_det.config import load_config
from nd_det.errors import ConfigError, DataError
from nd_det.modeling import FrozenTeacher

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    tiny_distill_cfg,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = config_path("R50_from_R101_nd.yaml")
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


# ---------------------------------------------------------------- teacher weights
def test_truncated_teacher_weights(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    path = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(
        ConfigError,
        match=r"MODEL.DISTILL.TEACHER_WEIGHTS .*teacher.pth: not a detectron2 checkpoint",
    ):
        build_model(cfg)


def test_teacher_weights_of_another_architecture(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    # a ResNet-34 teacher's checkpoint for a config that describes a ResNet-18 teacher
    other = cfg.clone()
    other.MODEL.DISTILL.TEACHER_OPTS = list(cfg.MODEL.DISTILL.TEACHER_OPTS) + [
        "MODEL.RESNETS.DEPTH",
        "34",
    ]
    write_teacher_checkpoint(other)
    with pytest.raises(
        ConfigError,
        match=r"does not fit the teacher of TEACHER_CONFIG "
        r"\(unexpected keys: backbone.bottom_up.res2.2",
    ):
        build_model(cfg)


def test_teacher_weights_with_a_wrong_shape(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    other = cfg.clone()
    other.MODEL.DISTILL.TEACHER_OPTS = list(cfg.MODEL.DISTILL.TEACHER_OPTS) + [
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "32",
    ]
    write_teacher_checkpoint(other)
    with pytest.raises(
        ConfigError,
        match=r"shape mismatches: roi_heads.box_head.fc1.weight "
        r"\(32, .*\) in the file vs \(64, .*\) in the model",
    ):
        build_model(cfg)


def test_teacher_weights_missing_keys(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    path = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["roi_heads.box_predictor.cls_score.weight"]
    torch.save(ckpt, path)
    with pytest.raises(
        ConfigError, match=r"missing keys: roi_heads.box_predictor.cls_score.weight"
    ):
        build_model(cfg)


def test_teacher_checkpoint_may_carry_allowed_extras(tmp_path):
    """Old buffers (pixel_mean/std) or an nd-det student's ABF keys are not architecture errors."""
    cfg = tiny_distill_cfg(str(tmp_path))
    path = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["pixel_mean"] = torch.zeros(3, 1, 1)
    ckpt["model"]["distill_terms.0.fusion.abfs.0.reduce.0.weight"] = torch.zeros(1)
    torch.save(ckpt, path)
    build_model(cfg)


def test_unknown_teacher_config_name(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    cfg.MODEL.DISTILL.TEACHER_CONFIG = "COCO-Detection/no_such_model.yaml"
    with pytest.raises(ConfigError, match="neither a file nor a model-zoo config name"):
        build_model(cfg)


def test_bad_teacher_autocast_value(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path))
    cfg.MODEL.DISTILL.TEACHER_AUTOCAST = "fp8"
    with pytest.raises(ConfigError, match=r"TEACHER_AUTOCAST 'fp8': use one of"):
        build_model(cfg)


# ---------------------------------------------------------------- class means
def _corrupt_means(cfg, how):
    path = cfg.MODEL.DISTILL.CLASS_MEANS
    if how == "missing":
        os.remove(path)
    elif how == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    elif how == "not_means":
        torch.save(torch.randn(3, 64), path)
    elif how == "nan_row":
        payload = torch.load(path, weights_only=True)
        payload["means"][1, 5] = float("nan")
        torch.save(payload, path)


@pytest.mark.parametrize(
    "how, message",
    [
        (
            "missing",
            r"class-means file not found: .*class_means.pth. Create it with "
            r"tools/extract_class_means.py",
        ),
        ("truncated", r"cannot read class-means file .*truncated or not a class-means file"),
        ("not_means", r"is not an nd-det class-means file"),
        ("nan_row", r"NaN/inf in class-mean row\(s\) 1"),
    ],
)
def test_bad_class_means_file(tmp_path, how, message):
    cfg = tiny_distill_cfg(str(tmp_path))
    _corrupt_means(cfg, how)
    with pytest.raises(DataError, match="MODEL.DISTILL.CLASS_MEANS: .*" + message):
        build_model(cfg)


def test_class_means_of_another_teacher_warn(tmp_path, caplog):
    cfg = tiny_distill_cfg(str(tmp_path))
    other = cfg.clone()
    other.MODEL.DISTILL.TEACHER_WEIGHTS = "some/other_teacher.pkl"
    write_random_class_means(other)  # same shape, metadata of another teacher
    # the class-means path is the same key in both configs
    assert other.MODEL.DISTILL.CLASS_MEANS == cfg.MODEL.DISTILL.CLASS_MEANS
    with caplog.at_level(logging.WARNING, logger="nd_det"):
        build_model(cfg)
    assert (
        "may come from another teacher (teacher_weights: file has 'some/other_teacher.pkl'"
        in caplog.text
    )


def test_student_and_teacher_embedding_sizes_differ(tmp_path):
    cfg = tiny_distill_cfg(str(tmp_path), "R50_from_R101_kd_nd.yaml")
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 48
    with pytest.raises(ValueError, match=r"student box head gives 48 .* teacher 64"):
        build_model(cfg)


# ---------------------------------------------------------------- datasets, through train_net
def _train_net_args(tmp_path, json_path, image_dir, *extra, flags=(), name="bad_train"):
    """train_net's argv (after the script) for a 1-iteration run on the given dataset."""
    opts = tiny_distill_opts(str(tmp_path)) + [
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "1",
        *extra,
    ]
    cfg = load_config(CONFIG, opts)
    if not os.path.exists(cfg.MODEL.DISTILL.TEACHER_WEIGHTS):
        write_teacher_checkpoint(cfg)
        write_random_class_means(cfg)
    return [
        "--config-file",
        CONFIG,
        *flags,
        "--dataset",
        name,
        str(json_path),
        str(image_dir),
        *opts,
    ]


def _train_net(tmp_path, json_path, image_dir, *extra, flags=()):
    """A real train_net process (for runs that get as far as training)."""
    argv = _train_net_args(tmp_path, json_path, image_dir, *extra, flags=flags)
    return subprocess.run(
        [sys.executable, TRAIN_NET, *argv],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _edit(json_path, edit):
    data = json.loads(json_path.read_text())
    edit(data)
    json_path.write_text(json.dumps(data))


def _drop_first_image_file(data, image_dir):
    os.remove(os.path.join(image_dir, data["images"][0]["file_name"]))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_image", "1 of 4 image files listed in it are missing or unreadable: "),
        (
            "box_outside",
            "annotation id 1: box [x, y, width, height] = [500, 10, 20, 20] lies outside its image",
        ),
        (
            "zero_area",
            "annotation id 1 has a box with zero or negative width or height (1 in all)",
        ),
        ("unknown_category", "annotation id 1 has category_id 42"),
        ("not_json", "is not valid JSON"),
    ],
)
def test_bad_coco_dataset_stops_train_net(tmp_path, case, message):
    json_path, image_dir = write_tiny_coco(tmp_path / "data", num_images=4, seed=3)
    if case == "missing_image":
        _edit(json_path, lambda d: _drop_first_image_file(d, image_dir))
    elif case == "box_outside":
        _edit(json_path, lambda d: d["annotations"][0].update(bbox=[500, 10, 20, 20]))
    elif case == "zero_area":
        _edit(json_path, lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 20]))
    elif case == "unknown_category":
        _edit(json_path, lambda d: d["annotations"][0].update(category_id=42))
    elif case == "not_json":
        json_path.write_text('{"images": [')
    # the command line's own code path, in this process (the checks run before any training)
    code, stderr = run_tool_in_process(
        TRAIN_NET, _train_net_args(tmp_path, json_path, image_dir, name="bad_" + case)
    )
    assert code == 2, stderr[-3000:]
    assert "ERROR: " in stderr and message in stderr
    assert str(json_path) in stderr  # the message names the file
    assert "Traceback" not in stderr
    assert not os.path.exists(tmp_path / "output")  # nothing was written


def test_zero_area_boxes_allowed_on_request(tmp_path):
    json_path, image_dir = write_tiny_coco(tmp_path / "data", num_images=4, seed=3)
    _edit(json_path, lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 20]))
    proc = _train_net(tmp_path, json_path, image_dir, flags=["--allow-degenerate-boxes"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (tmp_path / "output" / "model_final.pth").is_file()


def test_non_contiguous_categories_and_empty_images_train(tmp_path):
    """Legal COCO: category ids 3 and 20, and images without any box."""
    json_path, image_dir = write_tiny_coco(
        tmp_path / "data", num_images=5, seed=3, category_ids=(3, 20), empty_images=2
    )
    proc = _train_net(tmp_path, json_path, image_dir, "SOLVER.MAX_ITER", "2")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "2 of 5 images have no box" in log
    assert (tmp_path / "output" / "model_final.pth").is_file()


TOOLS = {
    name: os.path.join(REPO, "tools", f"{name}.py")
    for name in ("train_net", "extract_class_means", "export_student")
}


def _one_error(code, stderr):
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("tool", ["train_net", "extract_class_means"])
def test_a_tool_without_config_file_says_so_first(tool, tmp_path, monkeypatch):
    """Issue 35.6: before, train_net.py said "MODEL.DEVICE cuda: torch sees no CUDA device" and
    extract_class_means.py "MODEL.ROI_HEADS.NAME=Res5ROIHeads..."."""
    monkeypatch.chdir(tmp_path)
    line = _one_error(*run_tool_in_process(TOOLS[tool], []))
    assert line == (
        f"ERROR: the following arguments are required: --config-file (see {tool}.py --help)"
    )
    assert os.listdir(tmp_path) == []


def test_a_flag_after_the_overrides_is_a_flag():
    """Issue 35.6: before, ``... KEY VALUE --flag`` merged "--flag" as a config key."""
    line = _one_error(
        *run_tool_in_process(TRAIN_NET, ["--config-file", CONFIG, "SEED", "1", "--eval-teacher"])
    )
    assert line == "ERROR: --eval-teacher works with --eval-only"
    line = _one_error(
        *run_tool_in_process(TRAIN_NET, ["--config-file", CONFIG, "SEED", "1", "--outptu", "x"])
    )
    assert line.startswith("ERROR: unrecognized arguments: --outptu")


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_missing_config_or_base_names_the_folder_it_was_looked_for_in(
    tool, tmp_path, monkeypatch
):
    """Issue 35.3: a user's yaml with ``_BASE_: configs/...`` run from another folder; a relative
    --config-file that is not there.  detectron2 takes a _BASE_ from the yaml's own folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my.yaml").write_text(
        "_BASE_: configs/COCO-Distill/Base-Distill-RCNN-FPN.yaml\n"
    )
    extra = ["--weights", "w.pth", "--output", "out"] if tool == "export_student" else []
    line = _one_error(*run_tool_in_process(TOOLS[tool], ["--config-file", "mine/my.yaml", *extra]))
    assert line == (
        "ERROR: --config-file mine/my.yaml: its _BASE_ "
        "mine/configs/COCO-Distill/Base-Distill-RCNN-FPN.yaml "
        f"not found in {tmp_path}/mine/configs/COCO-Distill (a _BASE_ is relative to the yaml "
        "that names it)"
    )
    line = _one_error(*run_tool_in_process(TOOLS[tool], ["--config-file", "no/such.yaml", *extra]))
    assert line == f"ERROR: --config-file no/such.yaml: no/such.yaml not found in {tmp_path}/no"
    assert sorted(os.listdir(tmp_path)) == ["mine"]


def test_teacher_config_is_checked_before_weights_download(tmp_path):
    """A wrong class-means file is reported before the (possibly remote) teacher weights are
    read: the URL below would fail if it were fetched."""
    cfg = tiny_distill_cfg(str(tmp_path))
    _corrupt_means(cfg, "not_means")
    with torch.device("meta"):
        teacher = FrozenTeacher(cfg, load_weights=False)
    assert teacher.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = "https://invalid.invalid/teacher.pkl"
    with pytest.raises(DataError, match="is not an nd-det class-means file"):
        build_model(cfg)


def test_teacher_checkpoint_written_by_detectron2_loads_exactly(tmp_path):
    """A teacher checkpoint written by detectron2's checkpointer loads with every key matched."""
    cfg = tiny_distill_cfg(str(tmp_path))
    model = build_model(cfg)
    ckpt = torch.load(cfg.MODEL.DISTILL.TEACHER_WEIGHTS, weights_only=True)["model"]
    assert set(ckpt) == set(model.teacher.model.state_dict())
    assert all(torch.equal(ckpt[k], v) for k, v in model.teacher.model.state_dict().items())
