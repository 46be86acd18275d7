"""Files are data (issue 36.1): every file a user points at is read without running code it
carries.  Each crafted file below would create a marker file when unpickled by Python's pickle or
``torch.load(weights_only=False)`` (checked first, so the craft is real); read by nd-det it is
refused in one line naming the file and what it asked to load, and the marker never appears.
The real formats still load: detectron2 model-zoo and Caffe2 ``.pkl`` files, as detectron2's
own reader reads them."""

import collections
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from nd_det.class_means import load_class_means
from nd_det.config import load_config
from nd_det.engine.checkpoint import AtomicCheckpointer
from nd_det.errors import FileError, UserError
from nd_det.modeling import StrictCheckpointer, plain_student_cfg
from nd_det.utils.checkpoint_files import file_problem
from nd_det.utils.safe_pickle import load_pickle, load_torch

from .helpers.crafted_files import marker_pickle, marker_torch
from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = config_path("R50_from_R101_nd.yaml")


def _refused(error: BaseException, path) -> str:
    message = str(error)
    assert "\n" not in message and str(path) in message, message
    assert "asks to load io.open when unpickled: refused, nothing of it was run" in message
    return message


# ---------------------------------------------------------------- the two readers
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pkl_that_would_run_code_is_refused_and_nothing_runs(tmp_path, protocol):
    path = marker_pickle(tmp_path / "model_final.pkl", tmp_path / "ran", protocol)
    with pytest.raises(FileError) as caught:
        load_pickle(path)
    _refused(caught.value, path)
    assert not (tmp_path / "ran").exists()
    with open(path, "rb") as stream:  # the craft is real: plain pickle runs it
        pickle.load(stream, encoding="latin1")
    assert (tmp_path / "ran").exists()


def test_a_torch_file_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    path = marker_torch(tmp_path / "model_final.pth", tmp_path / "ran")
    with pytest.raises(FileError) as caught:
        load_torch(path)
    message = _refused(caught.value, path)
    assert "weights_only" not in message  # not torch's advice to load it unsafely
    assert not (tmp_path / "ran").exists()
    torch.load(path, weights_only=False)  # the craft is real
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_model_zoo_and_caffe2_pkl_files_load_as_detectron2_reads_them(tmp_path, protocol):
    """What detectron2's model-zoo files pickle (a dict of numpy arrays, ``__author__``,
    ``matching_heuristics``; OrderedDicts, numpy scalars; Caffe2's ``blobs`` with momenta), read
    by nd-det's checkpointer, equals detectron2's own reading of it."""
    model = torch.nn.Linear(3, 2)
    zoo = {
        "model": collections.OrderedDict(
            weight=np.arange(6, dtype=np.float32).reshape(2, 3), bias=np.ones(2, np.float64)
        ),
        "__author__": "Detectron2 Model Zoo",
        "matching_heuristics": True,
        "iteration": np.int64(90000),
        "notes": ["text", b"bytes", 1.5, None, (1, 2)],
    }
    caffe2 = {"blobs": {"weight": zoo["model"]["weight"], "weight_momentum": np.zeros((2, 3))}}
    for name, data in (("zoo.pkl", zoo), ("caffe2.pkl", caffe2)):
        path = str(tmp_path / name)
        with open(path, "wb") as stream:
            pickle.dump(data, stream, protocol=protocol)
        ours = StrictCheckpointer(model)._load_file(path)
        theirs = DetectionCheckpointer(model)._load_file(path)
        assert ours.keys() == theirs.keys() and ours["model"].keys() == theirs["model"].keys()
        for key, value in theirs["model"].items():
            assert (
                np.array_equal(ours["model"][key], value)
                and ours["model"][key].dtype == value.dtype
            )
        assert {k: v for k, v in ours.items() if k != "model"} == {
            k: v for k, v in theirs.items() if k != "model"
        }
    assert file_problem(str(tmp_path / "zoo.pkl")) is None


# ---------------------------------------------------------------- every kind of file
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny distillation set-up: config overrides, dataset, teacher and class means."""
    root = tmp_path_factory.mktemp("safe")
    train_json, train_dir = write_tiny_coco(root / "train", num_images=2, seed=1)
    opts = tiny_distill_opts(str(root)) + [
        "DATASETS.TRAIN",
        "('safe_train',)",
        "DATASETS.TEST",
        "('safe_train',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "1",
    ]
    cfg = load_config(CONFIG, opts)
    write_teacher_checkpoint(cfg)
    write_random_class_means(cfg)
    dataset = ["--dataset", "safe_train", str(train_json), str(train_dir)]
    return {"root": root, "opts": opts, "cfg": cfg, "dataset": dataset}


@pytest.mark.parametrize(
    "case",
    ["teacher_pkl", "teacher_pth", "class_means", "eval_weights_pkl", "eval_weights_pth"],
)
def test_train_net_refuses_a_crafted_file_in_one_line_before_anything_runs(world, tmp_path, case):
    marker = tmp_path / "ran"
    flags, key = (
        [],
        {
            "teacher_pkl": "MODEL.DISTILL.TEACHER_WEIGHTS",
            "teacher_pth": "MODEL.DISTILL.TEACHER_WEIGHTS",
            "class_means": "MODEL.DISTILL.CLASS_MEANS",
            "eval_weights_pkl": "MODEL.WEIGHTS",
            "eval_weights_pth": "MODEL.WEIGHTS",
        }[case],
    )
    if case.endswith("pkl"):
        path = marker_pickle(tmp_path / "crafted.pkl", marker)
    else:
        path = marker_torch(tmp_path / "crafted.pth", marker)
    if case.startswith("eval"):
        flags = ["--eval-only"]
    output = tmp_path / "output"
    argv = ["--config-file", CONFIG, *flags, *world["dataset"], *world["opts"]]
    code, stderr = run_tool_in_process(TRAIN_NET, argv + [key, path, "OUTPUT_DIR", str(output)])
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), stderr[-2000:]
    assert path in lines[0] and "asks to load io.open" in lines[0], lines[0]
    assert not marker.exists() and not output.exists()


def test_checkpointers_refuse_crafted_weights_teacher_and_resume_files(world, tmp_path):
    """The loads after the checks: the teacher's (StrictCheckpointer), the student's
    MODEL.WEIGHTS and a --resume checkpoint (the trainer's AtomicCheckpointer)."""
    marker = tmp_path / "ran"
    cfg = world["cfg"].clone()
    cfg.defrost()
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = marker_pickle(tmp_path / "teacher.pkl", marker)
    with pytest.raises(UserError) as caught:
        build_model(cfg)  # the teacher's weights load when the model is built
    _refused(caught.value, cfg.MODEL.DISTILL.TEACHER_WEIGHTS)
    student = build_model(plain_student_cfg(world["cfg"]))
    for weights in (
        marker_pickle(tmp_path / "w.pkl", marker),
        marker_torch(tmp_path / "w.pth", marker),
    ):
        with pytest.raises(FileError) as caught:
            AtomicCheckpointer(student, str(tmp_path)).resume_or_load(weights, resume=False)
        _refused(caught.value, weights)
    run = tmp_path / "run"
    run.mkdir()
    marker_torch(run / "model_0000001.pth", marker, {"model": student.state_dict(), "iteration": 1})
    (run / "last_checkpoint").write_text("model_0000001.pth")
    with pytest.raises(FileError) as caught:
        AtomicCheckpointer(student, str(run)).resume_or_load("", resume=True)
    _refused(caught.value, run / "model_0000001.pth")
    assert not marker.exists()


def test_a_crafted_class_means_file_is_refused(world, tmp_path):
    table = torch.load(world["cfg"].MODEL.DISTILL.CLASS_MEANS, weights_only=True)
    path = marker_torch(tmp_path / "means.pth", tmp_path / "ran", table)
    with pytest.raises(FileError) as caught:
        load_class_means(path)
    _refused(caught.value, path)
    assert not (tmp_path / "ran").exists()
    assert load_class_means(world["cfg"].MODEL.DISTILL.CLASS_MEANS).num_classes == 3


def test_classification_weights_and_checkpoints_refuse_a_crafted_file(tmp_path):
    """The classification side's one reader (ClassifierCheckpointer: model.weights, the
    teacher's weights, --resume) reads as data too."""
    from nd_det.classification.checkpoint import ClassifierCheckpointer, load_weights

    model, marker = torch.nn.Linear(3, 2), tmp_path / "ran"
    path = marker_torch(tmp_path / "model_final.pth", marker, {"model": model.state_dict()})
    with pytest.raises(UserError) as caught:
        load_weights(model, path)
    _refused(caught.value, path)
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(UserError) as caught:
        ClassifierCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    _refused(caught.value, path)
    assert not marker.exists()
    torch.save({"model": model.state_dict()}, path)  # the real format loads
    assert load_weights(torch.nn.Linear(3, 2), path) == {}
