"""tools/export_model.py: an export folder (tools/export_student.py) becomes model.pt2
(torch.export) and model.onnx (dynamo exporter, run in ONNX Runtime; one run of the tool writes
both from one torch.export) that reproduce the distilled student's detections on two image
sizes, for the demo's student at its size, a toy R50-FPN and a toy MobileNetV3-Small-FPN; the
input/output contract holds; bad input is one ERROR line, exit 2, nothing written."""

import json
import os
import sys
import warnings

import pytest
import torch

from nd_det.export.contract import (
    BOX_RTOL,
    TOLERANCE,
    deploy_image,
    in_python_order,
    load_exported_student,
    student_detections,
)

from .helpers.run_tool import run_tool_in_process
from .helpers.threads import one_torch_thread  # noqa: F401  (autouse fixture)
from .helpers.tiny_distill import REPO
from .helpers.toy_export import shared_export

TOOL = os.path.join(REPO, "tools", "export_model.py")


def check_pt2(program):
    """The input contract of the loaded ExportedProgram; returns its module."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    image = placeholders[-1].meta["val"]  # the user input comes after the weights
    assert placeholders[-1].name == "image" and image.dtype == torch.float32
    assert image.shape[0] == 3 and all(isinstance(s, torch.SymInt) for s in image.shape[1:])
    # height and width: free from the FPN's coarsest stride + 1 up
    assert [program.range_constraints[s.node.expr].lower for s in image.shape[1:]] == [65, 65]
    return program.module()


CLS_WEIGHT = "model.roi_heads.box_predictor.cls_score.weight"


def certain_background(weight):
    """Classifier weights whose logits make every RoI background (the box head's output is
    non-negative after its ReLU): the student then detects nothing."""
    changed = torch.full_like(weight, -1e4)
    changed[-1] = 1e4
    return changed


def onnx_session(model):
    import onnxruntime

    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def onnx_without_detections(path):
    """The ONNX file with :func:`certain_background` classifier weights, as a session."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    [init] = [i for i in proto.graph.initializer if i.name == CLS_WEIGHT]
    weight = torch.from_numpy(numpy_helper.to_array(init).copy())
    init.CopyFrom(numpy_helper.from_array(certain_background(weight).numpy(), CLS_WEIGHT))
    return onnx_session(proto.SerializeToString())


def run_onnx(session):
    return lambda image: [torch.from_numpy(x) for x in session.run(None, {"image": image.numpy()})]


def load_onnx(path):
    session = onnx_session(path)
    [image] = session.get_inputs()
    assert (image.name, image.type, image.shape) == (
        "image",
        "tensor(float)",
        [3, "height", "width"],
    )
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("boxes", "tensor(float)", ["detections", 4]),
        ("scores", "tensor(float)", ["detections"]),
        ("classes", "tensor(int64)", ["detections"]),
    ]
    return run_onnx(session)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
# detectron2's ResNet-FPN (BGR) and a torchvision backbone under FPN (the demo's, RGB); the
# MobileNetV3 graph is checked in eager mode (test_export_model_postprocess.py)
@pytest.mark.parametrize("student", ["demo", "r50"])
def test_exported_file_gives_the_students_detections(tmp_path_factory, student, fmt):
    export = shared_export(tmp_path_factory, student)
    assert export.code == 0, export.stderr
    path = os.path.join(export.deploy, f"model.{fmt}")
    assert f"Wrote {path} and {path}.json" in export.stdout
    # the tool loads model.pt2 back once (its parity check), and ONNX Runtime the .onnx
    assert export.pt2_loads == 1
    with open(path + ".json", encoding="utf-8") as f:
        record = json.load(f)
    assert record["format"] == fmt and record["versions"]["torch"] == torch.__version__
    assert record["notes"] == []  # no fallback to the legacy exporter
    checks = record["check"]["sizes"]
    assert len(checks) == 2 and checks[0]["input_size"] != checks[1]["input_size"]
    assert all(c["max_box_diff"] <= TOLERANCE and c["max_score_diff"] <= TOLERANCE for c in checks)

    reference = export.reference()
    module = check_pt2(export.program()) if fmt == "pt2" else None
    run = module if fmt == "pt2" else load_onnx(path)
    cfg, _ = load_exported_student(export.deploy)
    assert record["input"]["channel_order"] == cfg.INPUT.FORMAT
    for image_path in export.images:  # the check image and another size and aspect ratio
        tensor = deploy_image(cfg, image_path)
        with torch.no_grad():
            expected = student_detections(reference, tensor)
            # detections whose scores tie within float rounding may come in either order
            boxes, scores, classes = in_python_order(expected, run(tensor))
        assert (boxes.dtype, scores.dtype, classes.dtype) == (
            torch.float32,
            torch.float32,
            torch.int64,
        )
        assert boxes.shape == (len(expected[0]), 4) and len(expected[0]) > 0
        assert scores.shape == classes.shape == (len(expected[0]),)
        torch.testing.assert_close(boxes, expected[0], rtol=BOX_RTOL, atol=TOLERANCE)
        torch.testing.assert_close(scores, expected[1], rtol=0, atol=TOLERANCE)
        assert torch.equal(classes, expected[2])

    # an image without detections (every RoI made background, in the file and in the student):
    # empty outputs of the same dtypes, no failed runtime check
    student_weight = reference.roi_heads.box_predictor.cls_score.weight
    kept = student_weight.detach().clone()
    with torch.no_grad():
        student_weight.copy_(certain_background(kept))
        if fmt == "pt2":
            module.get_parameter(CLS_WEIGHT).copy_(certain_background(kept))
        run = module if fmt == "pt2" else run_onnx(onnx_without_detections(path))
        tensor = deploy_image(cfg, export.images[0])
        try:
            assert len(student_detections(reference, tensor)[0]) == 0
            boxes, scores, classes = run(tensor)
        finally:
            if fmt == "pt2":
                module.get_parameter(CLS_WEIGHT).copy_(kept)
    assert boxes.shape == (0, 4) and scores.shape == classes.shape == (0,)
    assert (boxes.dtype, scores.dtype, classes.dtype) == (torch.float32, torch.float32, torch.int64)


def refused(argv, expected):
    code, err = run_tool_in_process(TOOL, argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), err
    assert expected in lines[0], lines[0]


def test_bad_input_is_one_error_line_and_nothing_is_written(
    tmp_path_factory, tmp_path, monkeypatch
):
    export = shared_export(tmp_path_factory, "r50")
    export_dir, images = export.deploy, export.images
    folders = {export_dir: sorted(os.listdir(export_dir)), str(tmp_path): []}
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    folders[str(tmp_path)] = sorted(os.listdir(tmp_path))
    argv = [
        "--export-dir",
        export_dir,
        "--format",
        "onnx",
        "--image",
        images[0],
        "--output",
        str(tmp_path / "model.onnx"),
    ]
    refused(
        ["--export-dir", str(tmp_path), "--format", "pt2", "--image", images[0]],
        f"--export-dir {tmp_path} (tools/export_student.py's folder): {tmp_path}/config.yaml "
        f"not found in {tmp_path}",
    )
    refused(
        [
            "--export-dir",
            export_dir,
            "--format",
            "pt2",
            "--image",
            str(not_an_image),
            "--output",
            str(tmp_path / "model.pt2"),
        ],
        f"--image {not_an_image}: UnidentifiedImageError: cannot identify image file",
    )
    refused(
        [
            "--export-dir",
            export_dir,
            "--format",
            "pt2",
            "--image",
            str(tmp_path / "no.png"),
            "--output",
            str(tmp_path / "model.pt2"),
        ],
        f"--image {tmp_path / 'no.png'}: FileNotFoundError: [Errno 2] No such file",
    )
    refused(
        ["--export-dir", export_dir, "--format", "tflite", "--image", images[0]],
        "argument --format: invalid choice: 'tflite'",
    )
    refused(
        [
            "--export-dir",
            export_dir,
            "--format",
            "pt2",
            "--image",
            images[0],
            "--output",
            str(tmp_path / "model.pt2"),
            "--device",
            "cuda",
        ],
        "--device cuda: .pt2 and .onnx",
    )
    refused(
        [
            "--export-dir",
            export_dir,
            "--format",
            "pt2",
            "--image",
            images[0],
            "--output",
            str(not_an_image),
        ],
        f"--output {not_an_image} exists; pass --overwrite",
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    refused(
        argv,
        "--format onnx needs the Python package onnxruntime, which is not installed: "
        "pip install onnx onnxscript onnxruntime",
    )
    for folder, before in folders.items():
        assert sorted(os.listdir(folder)) == before


def test_a_full_disk_while_the_file_is_written_is_one_line_and_leaves_nothing(
    tmp_path_factory, tmp_path, monkeypatch
):
    import errno

    import nd_det.export.program as program

    export = shared_export(tmp_path_factory, "r50")
    export_dir, images = export.deploy, export.images
    save = program.save

    def half_then_full(built, file):  # the disk fills up half-way through the file
        save(built, file)
        file.truncate(file.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(program, "save", half_then_full)
    # the student's program as the shared export made it: torch.export once per session
    monkeypatch.setattr(
        program, "build", lambda model, image, shared=None: (export.program(), {}, [])
    )
    out = tmp_path / "model.pt2"
    refused(
        ["--export-dir", export_dir, "--format", "pt2", "--image", images[0], "--output", str(out)],
        f"--output {out} could not be written: [Errno 28] No space left on "
        "device; nothing was written",
    )
    assert os.listdir(tmp_path) == []


def test_a_file_that_differs_from_the_student_is_not_written(
    tmp_path_factory, tmp_path, monkeypatch
):
    import nd_det.export.torchscript as torchscript

    export = shared_export(tmp_path_factory, "r50")
    export_dir, images = export.deploy, export.images
    load = torchscript.load

    def off_by_a_hundredth(path, device):  # the reloaded file's boxes 0.01 px off
        run = load(path, device)
        return lambda image: (lambda b, s, c: (b + 0.01, s, c))(*run(image))

    monkeypatch.setattr(torchscript, "load", off_by_a_hundredth)
    # torch's FutureWarnings about TorchScript itself print as usual; only the ERROR line counts
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
    refused(
        [
            "--export-dir",
            export_dir,
            "--format",
            "torchscript",
            "--image",
            images[0],
            "--output",
            str(tmp_path / "model.ts"),
        ],
        "TorchScript and Python detections differ: max |box diff| 0.01 px, max |score diff| "
        "0 (tolerance 0.001 + 1e-05 x |coordinate| px, 0.001 for scores); nothing was written",
    )
    assert os.listdir(tmp_path) == []


def test_a_one_stage_student_exports_too(tmp_path, capsys):
    """A distilled RetinaNet (issue 32.2): its graph is export.dense_graph's; the tool checks both
    files at two sizes against detectron2's own inference, and the ONNX file detects as the
    DistillRetinaNet does on another image."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from nd_det.export import export_student

    from .helpers.tiny_dense import tiny_retinanet_cfg
    from .helpers.toy_export import write_image

    sizes = ["INPUT.MIN_SIZE_TEST", "144", "INPUT.MAX_SIZE_TEST", "200"]  # p7: 129 px at least
    cfg = tiny_retinanet_cfg(str(tmp_path), extra_opts=sizes)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    export_student(cfg, str(tmp_path / "model_final.pth"), str(tmp_path / "deploy"))
    images = [
        write_image(tmp_path / f"{i}.png", h, w, seed=i)
        for i, (h, w) in enumerate(((150, 200), (210, 160)))
    ]
    code, err = run_tool_in_process(
        TOOL,
        ["--export-dir", str(tmp_path / "deploy"), "--format", "pt2", "onnx", "--image", images[0]],
    )
    assert code == 0, err
    printed = capsys.readouterr().out
    for fmt in ("pt2", "onnx"):
        with open(tmp_path / "deploy" / f"model.{fmt}.json", encoding="utf-8") as f:
            record = json.load(f)
        assert [c["input_size"] for c in record["check"]["sizes"]] == [[144, 192], [192, 256]]
        assert f"model.{fmt}.json: {fmt} export" in printed
    export_cfg, _ = load_exported_student(str(tmp_path / "deploy"))
    tensor = deploy_image(export_cfg, images[1])
    with torch.no_grad():
        expected = student_detections(model, tensor)
    boxes, scores, classes = in_python_order(
        expected, load_onnx(str(tmp_path / "deploy" / "model.onnx"))(tensor)
    )
    assert len(expected[0]) > 0
    torch.testing.assert_close(boxes, expected[0], rtol=BOX_RTOL, atol=TOLERANCE)
    torch.testing.assert_close(scores, expected[1], rtol=0, atol=TOLERANCE)
    assert torch.equal(classes, expected[2])
