"""tools/import_class_means.py --task classification: the reference's classification class-mean
tables (center_emb_train.json: {"0": [D numbers], ...}, one row per class, keys in the order the
classes were first seen, indent 4, values rounded to 4 decimals) imported into the one class-means
format, tied to the teacher weights file, checked like the detection tables, and used by
training.  The JSONs are written by the tests in the reference's shape."""

import json
import os
import random
import re

import numpy as np
import pytest
import torch

from nd_det.class_means import load_class_means
from nd_det.classification.checkpoint import file_sha256
from nd_det.classification.cli import train_main
from nd_det.classification.models import build_classifier
from nd_det.classification.teacher import load_teacher_class_means
from nd_det.classification.trainer import ClassificationTrainer

from ..helpers.run_tool import run_tool_in_process
from .helpers import save_random_teacher, terms_config, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMPORT = os.path.join(REPO, "tools", "import_class_means.py")


def _reference_table(path, num_classes, dim, seed=0, edit=None):
    """A table in the reference's shape: non-negative (post-ReLU) means rounded to 4 decimals,
    the keys shuffled, written with json.dumps(indent=4); returns the values as float64."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.gamma(1.0, 0.8, (num_classes, dim)), 4)
    order = list(range(num_classes))
    random.Random(seed).shuffle(order)
    table = {str(k): values[k].tolist() for k in order}
    if edit is not None:
        edit(table)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(table, indent=4))
    return torch.tensor(values, dtype=torch.float64)


def _run(argv):
    code, err = run_tool_in_process(IMPORT, ["--task", "classification", *map(str, argv)])
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("teacher,dim", [("resnet34", 512), ("resnet50", 2048)])
def test_reference_imagenet_tables_are_reproduced(tmp_path, teacher, dim):
    source = tmp_path / "center_emb_train.json"
    published = _reference_table(source, 1000, dim)
    weights = tmp_path / f"{teacher}.pth"
    weights.write_bytes(b"stands for torchvision's weights file: only its sha256 is read")
    out = tmp_path / "class_means.pth"
    code, lines = _run(
        [
            "--input",
            source,
            "--teacher-model",
            teacher,
            "--teacher-weights",
            weights,
            "--output",
            out,
        ]
    )
    assert code == 0, lines
    table = load_class_means(str(out), num_classes=1000, dim=dim)
    # every published number, to float32 rounding, in class order
    assert torch.equal(table.means, published.float())
    assert torch.allclose(table.means.double(), published, rtol=2**-24, atol=0)
    assert torch.equal(table.counts, torch.ones(1000, dtype=torch.int64))
    meta = table.metadata
    assert (meta["teacher_model"], meta["teacher_weights"], meta["dataset"], meta["task"]) == (
        teacher,
        str(weights),
        "image_folder",
        "classification",
    )
    assert meta["teacher_weights_sha256"] == file_sha256(str(weights))
    assert meta["protocol"] == "imported" and meta["counts_known"] is False
    assert meta["source_sha256"] == file_sha256(str(source))
    # training with that teacher file (and an ImageNet-style folder) accepts it
    model = build_classifier(teacher, 1000)
    cfg = terms_config({"nd": {}})
    cfg.distill.teacher.name, cfg.distill.class_means = teacher, str(out)
    cfg.data.name = "image_folder"
    accepted = load_teacher_class_means(cfg, model, file_sha256(str(weights)))
    assert torch.equal(accepted.means, table.means)


def test_default_output_is_where_the_configs_read(tmp_path, monkeypatch):
    source = tmp_path / "table.json"
    _reference_table(source, 100, 64)
    weights = tmp_path / "teacher.pth"
    weights.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    code, lines = _run(
        [
            "--input",
            source,
            "--teacher-model",
            "resnet56",
            "--teacher-weights",
            weights,
            "--dataset",
            "cifar100",
            "--num-classes",
            "100",
        ]
    )
    assert code == 0, lines
    written = tmp_path / "output/classification/cifar100/teachers/resnet56/class_means.pth"
    assert load_class_means(str(written), num_classes=100, dim=64).metadata["dataset"] == "cifar100"


def test_training_uses_the_imported_table(tmp_path):
    """A tiny digits run (10 classes, a wrn_16_2 teacher: 128-d) with an imported table."""
    weights = save_random_teacher(tmp_path / "teacher.pth", "wrn_16_2")
    source = tmp_path / "table.json"
    published = _reference_table(source, 10, 128)
    means = tmp_path / "imported.pth"
    code, lines = _run(
        [
            "--input",
            source,
            "--teacher-model",
            "wrn_16_2",
            "--teacher-weights",
            weights,
            "--dataset",
            "digits",
            "--num-classes",
            "10",
            "--output",
            means,
        ]
    )
    assert code == 0, lines
    distill = {
        "teacher": {"name": "wrn_16_2", "weights": weights},
        "class_means": str(means),
        "losses": ["nd"],
    }
    trainer = ClassificationTrainer(tiny_config(tmp_path, "student", distill=distill))
    torch.testing.assert_close(trainer.distiller.terms["nd"].class_means, published.float())
    # with another teacher file (the same tensors, one more byte), training refuses the table
    other = tmp_path / "other.pth"
    other.write_bytes(open(weights, "rb").read() + b"\0")
    with pytest.raises(
        ValueError,
        match=r"was not made with this teacher/dataset \(teacher_weights_sha256",
    ):
        train_main(
            [
                "--config-file",
                os.path.join(tmp_path, "student.yaml"),
                *("distill.teacher.weights", str(other)),
            ]
        )


def _set(key, value):
    return lambda t: t.__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, argv, message",
    [
        (
            lambda t: t.pop("17"),
            [],
            r"keys must be \"0\"..\"99\".* missing 17",
        ),
        (
            lambda t: t.pop("99"),
            [],
            r"keys must be \"0\"..\"99\".* missing 99",
        ),
        (_set("100", [0.5] * 64), [], r"keys must be \"0\"..\"99\".* unexpected 100"),
        (
            _set("120", [0.5] * 64),
            [],
            r"keys must be \"0\"..\"99\".* unexpected 120",
        ),
        (
            _set("5", [0.5] * 32),
            [],
            r"expected sequence of length 64 at dim 1 \(got 32\)",
        ),
        (_set("3", [0.0] * 64), [], r"row\(s\) 3 are NaN/inf or all zeros"),
        (None, ["--dim", "32"], r"its rows have shape \(64,\) but --dim is 32"),
    ],
    ids=[
        "missing-row",
        "too-few-rows",
        "too-many-rows",
        "row-beyond-the-last",
        "narrow-row",
        "zero-row",
        "wrong-dim",
    ],
)
def test_malformed_tables_are_refused_in_one_line(tmp_path, edit, argv, message):
    source = tmp_path / "table.json"
    _reference_table(source, 100, 64, edit=edit)
    weights = tmp_path / "teacher.pth"
    weights.write_bytes(b"x")
    out = tmp_path / "out.pth"
    code, lines = _run(
        [
            "--input",
            source,
            "--teacher-model",
            "resnet56",
            "--teacher-weights",
            weights,
            "--num-classes",
            "100",
            "--dataset",
            "cifar100",
            "--output",
            out,
            *argv,
        ]
    )
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"ERROR: --input {source}: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [],
            r"--task classification needs --teacher-model and --teacher-weights",
        ),
        (
            ["--teacher-model", "resnet9", "--teacher-weights", "{weights}"],
            r"unknown classifier 'resnet9'; available: deit_b_distilled",
        ),
        (
            ["--teacher-model", "resnet50", "--teacher-weights", "{missing}"],
            r"--teacher-weights .*missing.pth: file not found",
        ),
        (
            ["--teacher-model", "resnet50", "--teacher-weights", "{weights}", "--output", "t.json"],
            r"--output t.json: .* give a .pth path",
        ),
        (
            [
                "--teacher-model",
                "resnet50",
                "--teacher-weights",
                "{weights}",
                "--teacher-opts",
                "A",
                "1",
            ],
            r"--teacher-opts is a flag of --task detection",
        ),
    ],
    ids=["no-teacher", "unknown-teacher", "missing-weights", "json-output", "detection-flag"],
)
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, argv, message):
    source = tmp_path / "table.json"
    _reference_table(source, 10, 8)
    (tmp_path / "weights.pth").write_bytes(b"x")
    names = {"weights": tmp_path / "weights.pth", "missing": tmp_path / "missing.pth"}
    argv = [a.format(**names) for a in argv]
    before = set(os.listdir(tmp_path))
    code, lines = _run(["--input", source, "--num-classes", "10", *argv])
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert set(os.listdir(tmp_path)) == before


def test_classification_flags_are_refused_for_detection(tmp_path):
    code, err = run_tool_in_process(
        IMPORT, ["--input", str(tmp_path / "t.json"), "--teacher-model", "resnet50"]
    )
    assert code == 2 and err.strip() == (
        "ERROR: --teacher-model is a flag of --task "
        "classification; a detection table's teacher is "
        "--teacher-config / --teacher-weights"
    ), err
