"""tools/import_class_means.py: a table in the reference's JSON format -> nd-det's format, tied
to its teacher; every malformed table refused in one line, nothing written; training given the
JSON itself names the importer."""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from nd_det.class_means import load_class_means, metadata_mismatches
from nd_det.class_means.import_cli import main
from nd_det.config import load_config
from nd_det.errors import DataError
from nd_det.modeling import teacher_identity

from .helpers.tiny_distill import CONFIG_DIR, REPO, tiny_distill_cfg

TOOL = os.path.join(REPO, "tools", "import_class_means.py")


def _published_table(path, rows=81, dim=1024, seed=0, edit=None, indent=4):
    """A JSON in the reference's layout: {"<k>": [dim floats rounded to 4 decimals]}, keys in a
    shuffled order (the reference's file is not sorted); ``edit(dict)`` spoils it."""
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand(rows, dim, generator=g) * 2).double()
    order = torch.randperm(rows, generator=g).tolist()
    table = {str(k): [round(float(v), 4) for v in values[k]] for k in order}
    expected = torch.tensor([table[str(k)] for k in range(rows)], dtype=torch.float32)
    if edit is not None:
        edit(table)
    path.write_text(json.dumps(table, indent=indent))
    return expected


def _run(argv, capsys):
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def test_tool_writes_the_table_for_the_default_configs_teacher(tmp_path):
    source = tmp_path / "R101_emb.json"
    expected = _published_table(source)
    proc = subprocess.run(
        [sys.executable, TOOL, "--input", str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote class_means/coco_faster_rcnn_R_101_FPN_3x.pth: 81 x 1024" in proc.stdout

    cfg = load_config(os.path.join(CONFIG_DIR, "R50_from_R101_nd.yaml"))
    path = tmp_path / cfg.MODEL.DISTILL.CLASS_MEANS  # the path the default config reads
    table = load_class_means(str(path), num_classes=81, dim=1024)
    assert torch.equal(table.means, expected)  # exactly the published numbers (as float32)
    assert torch.equal(table.counts, torch.ones(81, dtype=torch.int64))
    meta = table.metadata
    assert metadata_mismatches(table, teacher_identity(cfg)) == []  # training accepts it silently
    assert meta["teacher_weights"].startswith("detectron2://COCO-Detection/faster_rcnn_R_101")
    assert meta["source_file"] == "R101_emb.json"
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["counts_known"] is False and meta["protocol"] == "imported"
    assert meta["background_row"] == 80 and meta["zero_filled_classes"] == []
    assert meta["class_names"][0] == "person" and meta["class_names"][-1] == "background"


def test_r50_teacher_import_matches_the_mobilenet_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "R50_emb.json"
    _published_table(source, seed=1, indent=None)
    status, lines = _run(
        ["--input", source, "--teacher-config", "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"],
        capsys,
    )
    assert status == 0, lines
    cfg = load_config(os.path.join(CONFIG_DIR, "MV2_from_R50_nd.yaml"))
    table = load_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, num_classes=81, dim=1024)
    assert metadata_mismatches(table, teacher_identity(cfg)) == []


def _drop(key):
    return lambda t: t.pop(key)


def _set(key, value):
    return lambda t: t.__setitem__(key, value)


def _row_with(position, value):
    return lambda t: t["3"].__setitem__(position, value)


@pytest.mark.parametrize(
    "edit, argv, message",
    [
        (_drop("17"), [], r'keys must be "0".."80" \(background last\): missing 17, unexpected'),
        (
            lambda t: [t.pop(str(k)) for k in range(21, 81)],
            [],
            r"missing 21, 22, 23, 24, 25, ... \(60 in all\), unexpected none \(21 rows: "
            r"--num-classes 20\?\)",
        ),
        (_set("85", [0.5] * 1024), [], r"missing none, unexpected 85 \(82 rows"),
        (_set("81", [0.5] * 1024), [], r"unexpected 81 \(82 rows: --num-classes 81\?\)"),
        (_set("cat", [0.5] * 1024), [], r"unexpected cat "),
        (_set("07", [0.5] * 1024), [], r"unexpected 07 "),
        (_set("5", [0.5] * 512), [], r"expected sequence of length 1024 at dim 1 \(got 512\)"),
        (_set("5", "0.5"), [], r"expected sequence of length 1024 at dim 1 \(got 3\)"),
        (_row_with(9, "x"), [], r"TypeError: must be real number, not str; the format: "),
        (_row_with(9, float("nan")), [], r"row\(s\) 3 are NaN/inf or all zeros"),
        (_set("80", [0.0] * 1024), [], r"row\(s\) 80 are NaN/inf or all zeros"),
        (
            None,
            ["--num-classes", "20"],
            r'keys must be "0".."20" .* \(81 rows: --num-classes 80\?\)',
        ),
    ],
    ids=[
        "missing-row",
        "too-few-rows",
        "row-beyond-background",
        "too-many-rows",
        "word-key",
        "leading-zero-key",
        "narrow-row",
        "row-not-a-list",
        "non-number",
        "nan",
        "zero-row",
        "wrong-num-classes",
    ],
)
def test_malformed_tables_are_refused_in_one_line(tmp_path, capsys, edit, argv, message):
    source = tmp_path / "table.json"
    _published_table(source, edit=edit)
    out = tmp_path / "out.pth"
    status, lines = _run(["--input", source, "--output", out, *argv], capsys)
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: --input {source}: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"0": [1.0, 2.0], "0": [1.0, 2.0]}', r"a class index appears twice as a key"),
        ('{"0": [1.0, 2.0]', r"JSONDecodeError: Expecting ',' delimiter: line 1 column"),
        ("[[1.0, 2.0], [3.0, 4.0]]", r"TypeError: unhashable type: 'list'; the format: "),
    ],
    ids=["duplicate-key", "cut-json", "top-level-list"],
)
def test_files_that_are_not_such_tables_are_refused(tmp_path, capsys, text, message):
    source = tmp_path / "table.json"
    source.write_text(text)
    status, lines = _run(
        ["--input", source, "--output", tmp_path / "o.pth", "--num-classes", "1", "--dim", "2"],
        capsys,
    )
    assert status == 2 and len(lines) == 1
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input", "{missing}"], r"ERROR: --input .*missing.json: FileNotFoundError: "),
        (
            ["--output", "{blocker}/t.pth"],
            r"ERROR: --output .*t.pth cannot be created: .*blocker is a "
            r"file",
        ),
        (["--output", "t.json"], r"ERROR: --output t.json: .* give a .pth path"),
        (
            ["--teacher-config", "COCO-Detection/faster_rcnn_R_999.yaml"],
            r"ERROR: --teacher-config .* \(a file or a model-zoo name\): RuntimeError: "
            r"COCO-Detection/faster_rcnn_R_999.yaml not available in Model Zoo!",
        ),
        (
            ["--teacher-config", "{local_yaml}"],
            r"ERROR: --teacher-config .* is not a model-zoo "
            r"config with known weights: give --teacher-weights",
        ),
    ],
    ids=[
        "missing-input",
        "unwritable-output",
        "json-output",
        "unknown-teacher",
        "local-teacher-without-weights",
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    source = tmp_path / "table.json"
    _published_table(source)
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "teacher.yaml").write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 80\n")
    names = {
        "missing": tmp_path / "missing.json",
        "blocker": tmp_path / "blocker",
        "local_yaml": tmp_path / "teacher.yaml",
    }
    argv = [a.format(**names) for a in argv]
    if "--input" not in argv:
        argv = ["--input", str(source), *argv]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "out.pth")]
    status, lines = _run(argv, capsys)
    assert status == 2 and len(lines) == 1, lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out.pth").exists()


def test_training_given_the_json_names_the_importer_then_uses_the_import(tmp_path, capsys, caplog):
    cfg = tiny_distill_cfg(str(tmp_path), write_class_means=False)
    source = tmp_path / "R101_emb.json"
    expected = _published_table(source, rows=3, dim=64)
    cfg.MODEL.DISTILL.CLASS_MEANS = str(source)
    with pytest.raises(
        DataError,
        match=r"MODEL.DISTILL.CLASS_MEANS: .*R101_emb.json is a "
        r"JSON table .* python tools/import_class_means.py --input",
    ):
        build_model(cfg)

    out = tmp_path / "imported.pth"
    distill = cfg.MODEL.DISTILL
    status, lines = _run(
        [
            "--input",
            source,
            "--output",
            out,
            "--num-classes",
            "2",
            "--dim",
            "64",
            "--teacher-config",
            distill.TEACHER_CONFIG,
            "--teacher-weights",
            distill.TEACHER_WEIGHTS,
            "--teacher-opts",
            *distill.TEACHER_OPTS,
        ],
        capsys,
    )
    assert status == 0, lines
    cfg.MODEL.DISTILL.CLASS_MEANS = str(out)
    with caplog.at_level(logging.WARNING):
        model = build_model(cfg)
    assert "another teacher" not in caplog.text  # same teacher identity: no warning
    table = load_class_means(str(out))
    assert metadata_mismatches(table, teacher_identity(cfg)) == []
    assert table.metadata["class_names"] == []  # not COCO: no names known
    torch.testing.assert_close(model.distill_terms[1].class_means, expected)


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, capsys):
    source, out = tmp_path / "R101_emb.json", tmp_path / "means.pth"
    _published_table(source, rows=3, dim=4)
    argv = ["--input", source, "--output", out, "--num-classes", "2", "--dim", "4"]
    assert _run(argv, capsys)[0] == 0
    before = out.read_bytes()
    _published_table(source, rows=3, dim=4, seed=5)
    status, lines = _run(argv, capsys)
    assert status == 2 and lines == [
        f"ERROR: --output {out} exists; pass --overwrite to replace it, or choose another path"
    ]
    assert out.read_bytes() == before
    assert _run([*argv, "--overwrite"], capsys)[0] == 0
    assert torch.equal(load_class_means(str(out)).means, _published_table(source, 3, 4, seed=5))
