"""tools/export_model.py --format torchscript (legacy): the folder export_student writes
becomes a TorchScript file (detectron2's TracingAdapter + torch.jit.trace) that gives the
distilled student's boxes, scores and classes on the same images, also at another image size
and in a process that imports neither nd_det nor detectron2; bad input is one ERROR line, exit
status 2."""

import json
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

from nd_det.errors import ExportError
from nd_det.export.contract import (
    compare_detections,
    deploy_image,
    in_python_order,
    load_exported_student,
    student_detections,
)
from nd_det.export.formats import export_model

from .helpers.run_tool import run_tool_in_process
from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import REPO
from .helpers.toy_export import distilled_export, write_image

TOOL = os.path.join(REPO, "tools", "export_model.py")
STUDENTS = {
    # torchvision MobileNetV3-Large (nd-det's builder) and detectron2's own ResNet-18 FPN
    "mv3": (
        "MV3_from_R50_nd.yaml",
        ["MODEL.TORCHVISION.NORM", "GN", "MODEL.TORCHVISION.FREEZE_AT", "0"],
    ),
    "r18": ("R18_from_R101_nd.yaml", []),
}

# a deployment: torch + torchvision only; nd_det and detectron2 refuse to import
PLAIN_TORCH_SCRIPT = r"""
import importlib.abc
import sys
import warnings


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nd_det", "detectron2"):
            raise ImportError(name + " imported by the deployment process")
        return None


sys.meta_path.insert(0, Refuse())
import torch
import torchvision  # noqa: F401  (registers the nms / roi_align ops the module calls)

model = torch.jit.load(sys.argv[1])
images = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save([tuple(model(image)) for image in images], sys.argv[3])
"""


def assert_same(ours, theirs):
    boxes, scores, classes = ours
    assert len(boxes) == len(theirs[0]) > 0
    torch.testing.assert_close(boxes, theirs[0], rtol=0, atol=1e-3)
    torch.testing.assert_close(scores, theirs[1], rtol=0, atol=1e-5)
    assert torch.equal(classes, theirs[2])


@pytest.mark.parametrize("student", list(STUDENTS))
def test_traced_student_gives_the_distilled_students_detections(tmp_path, student):
    distilled, export_dir = distilled_export(tmp_path, *STUDENTS[student])
    image = write_image(tmp_path / "a.png", 120, 160, seed=0)  # resized to 96x128
    other = write_image(tmp_path / "b.jpg", 150, 100, seed=1)  # resized to 144x96
    result = export_model(export_dir, image, "torchscript")
    assert result.path == os.path.join(export_dir, "model.ts") and os.path.isfile(result.path)
    assert result.input_size == (96, 128)
    info = json.load(open(result.info_path))
    cfg, python_student = load_exported_student(export_dir)
    assert info["input"]["channel_order"] == cfg.INPUT.FORMAT
    assert info["input"]["resize"] == {"shortest_side": 96, "longest_side_at_most": 160}
    assert info["check"]["sizes"][0]["detections"] == result.detections > 0
    assert sorted(os.listdir(export_dir)) == [
        "config.yaml",
        "model.ts",
        "model.ts.json",
        "model_final.pth",
    ]

    traced = torch.jit.load(result.path)
    for path in (image, other):
        tensor = deploy_image(cfg, path)
        with torch.no_grad():
            expected = student_detections(distilled, tensor)  # DistillRCNN in eval mode
            assert_same(student_detections(python_student, tensor), expected)
            assert_same(tuple(traced(tensor)), expected)


def test_traced_file_runs_without_nd_det_or_detectron2(tmp_path):
    distilled, export_dir = distilled_export(tmp_path, *STUDENTS["mv3"])
    paths = [
        write_image(tmp_path / "a.png", 120, 160, seed=0),
        write_image(tmp_path / "b.png", 150, 100, seed=1),
    ]
    result = export_model(export_dir, paths[0], "torchscript")
    cfg, _ = load_exported_student(export_dir)
    images = [deploy_image(cfg, p) for p in paths]
    torch.save(images, str(tmp_path / "images.pt"))
    script = tmp_path / "deploy.py"
    script.write_text(PLAIN_TORCH_SCRIPT)
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            result.path,
            str(tmp_path / "images.pt"),
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = torch.load(str(tmp_path / "out.pt"))
    for image, found in zip(images, outputs):
        with torch.no_grad():
            assert_same(found, student_detections(distilled, image))


def test_tool_writes_the_file_and_refuses_bad_input(tmp_path, capsys):
    _, export_dir = distilled_export(tmp_path, *STUDENTS["mv3"])
    image = write_image(tmp_path / "a.png", 120, 160, seed=0)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        code, err = run_tool_in_process(
            TOOL, ["--export-dir", export_dir, "--format", "torchscript", "--image", image]
        )
    assert code == 0, err
    printed = capsys.readouterr().out
    assert f"Wrote {os.path.join(export_dir, 'model.ts')} and " in printed
    assert "classes equal" in printed
    # the tracer's warnings: gathered into the .json and one printed line, not shown one by one
    assert not [w for w in shown if issubclass(w.category, torch.jit.TracerWarning)]
    with open(os.path.join(export_dir, "model.ts.json"), encoding="utf-8") as f:
        sites = json.load(f)["tracer_warnings"]
    assert sites and len(set(sites)) == len(sites)
    assert all(re.fullmatch(r"(detectron2|torch|torchvision|nd_det)/\S+\.py:\d+", s) for s in sites)
    assert f"The tracer warned at {len(sites)} places" in printed

    def refused(argv, expected):
        code, err = run_tool_in_process(TOOL, ["--format", "torchscript", *argv])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), err
        assert expected in lines[0], lines[0]

    refused(
        ["--export-dir", export_dir, "--image", image],
        f"--output {os.path.join(export_dir, 'model.ts')} exists; pass --overwrite",
    )
    refused(
        ["--export-dir", str(tmp_path / "nowhere"), "--image", image],
        f"{tmp_path / 'nowhere'}/config.yaml not found in {tmp_path / 'nowhere'}",
    )
    refused(
        ["--export-dir", export_dir, "--image", str(tmp_path / "missing.png"), "--overwrite"],
        f"--image {tmp_path / 'missing.png'}: FileNotFoundError",
    )
    refused(
        [
            "--export-dir",
            export_dir,
            "--image",
            os.path.join(export_dir, "config.yaml"),
            "--overwrite",
        ],
        "UnidentifiedImageError: cannot identify image file",
    )
    refused(  # a training folder (with its DistillRCNN config.yaml) is not an export
        ["--export-dir", str(tmp_path / "train"), "--image", image],
        "(tools/export_student.py's folder): Non-existent config key: MODEL.DISTILL",
    )


def test_round_trip_check_refuses_different_detections():
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]])
    python = (boxes, torch.tensor([0.9, 0.5]), torch.tensor([1, 0]))
    assert compare_detections(python, (boxes + 1e-4, python[1], python[2])) == pytest.approx(
        (1e-4, 0.0), abs=1e-6
    )
    with pytest.raises(ExportError, match="max .box diff. 0.01 px"):
        compare_detections(python, (boxes + 0.01, python[1], python[2]))
    with pytest.raises(ExportError, match="1 detections"):
        compare_detections(python, (boxes[:1], python[1][:1], python[2][:1]))
    with pytest.raises(ExportError, match="classes"):
        compare_detections(python, (boxes, python[1], torch.tensor([0, 0])))
    # two detections of (almost) the same score may come in either order: not a difference
    tied = (boxes, torch.tensor([0.7, 0.7 + 1e-6]), torch.tensor([1, 1]))
    swapped = (boxes.flip(0), tied[1].flip(0), tied[2])
    assert in_python_order(tied, swapped)[0].equal(boxes)
    assert compare_detections(tied, swapped) == (0.0, 0.0)


def test_a_failed_round_trip_writes_nothing(tmp_path, monkeypatch):
    import nd_det.export.contract as contract

    _, export_dir = distilled_export(tmp_path, *STUDENTS["mv3"])
    image = write_image(tmp_path / "a.png", 120, 160, seed=0)
    before = sorted(os.listdir(export_dir))

    def differs(python, traced, what):
        raise ExportError("the traced module gives 0 detections, the student 3")

    monkeypatch.setattr(contract, "compare_detections", differs)
    with pytest.raises(ExportError, match="0 detections"):
        export_model(export_dir, image, "torchscript")
    assert sorted(os.listdir(export_dir)) == before  # no model.ts, no .json, no temporary file
