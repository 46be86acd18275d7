"""Students exported as tools/export_student.py does, and their deploy files as
tools/export_model.py writes them, for the deploy-format tests and the docs' code blocks.

:func:`shared_export` makes each of :data:`SHARED_STUDENTS` once per test session, whichever test
file (and pytest-xdist worker) asks first: the files go into a folder next to the workers' own
temporary folders, under a file lock.  torch.export and the ONNX translation take most of a
minute per student, whatever its size; the tests then only load and run what was written."""

import contextlib
import io
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from filelock import FileLock
from PIL import Image

from nd_det.config import load_config
from nd_det.export import export_student
from nd_det.modeling.student_checkpoint import plain_student_cfg

from .run_tool import run_tool_in_process
from .tiny_distill import REPO, tiny_distill_cfg

EXPORT_MODEL = os.path.join(REPO, "tools", "export_model.py")
# name -> (configs/COCO-Distill/<file>, overrides); "demo" is the demo's student at its size
SHARED_STUDENTS = {
    # detectron2's ResNet under FPN (the tiny test sizes: depth 18, GroupNorm): BGR input
    "r50": ("R50_from_R101_nd.yaml", []),
    # the demo's student (MobileNetV2 x0.5 FPN, 400 px, one class), random init
    "demo": None,
}
# the image each is checked on, and a second one of another size and aspect ratio, (h, w)
SHARED_IMAGES = {"r50": ((120, 160), (150, 100))}
SHARED_IMAGES["demo"] = ((300, 400), (520, 338))
_PROGRAMS: dict[str, torch.export.ExportedProgram] = {}  # loaded by the tool in this process


def write_image(path, height, width, seed):
    """A random RGB image file (the format from the suffix); returns its path."""
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def distilled_export(tmp, config_file, opts):
    """A DistillRCNN of the tiny config (``configs/COCO-Distill/<config_file>`` + ``opts``) from
    seed 0, saved as a training checkpoint and exported with export_student into
    ``tmp/deploy``.  Returns the DistillRCNN (eval mode) and the export folder."""
    cfg = tiny_distill_cfg(str(tmp), config_file, extra_opts=opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    (tmp / "train").mkdir()
    DetectionCheckpointer(model, str(tmp / "train")).save("model_final")
    (tmp / "train" / "config.yaml").write_text(cfg.dump())
    export_student(cfg, str(tmp / "train" / "model_final.pth"), str(tmp / "deploy"))
    return model.eval(), str(tmp / "deploy")


def demo_export(tmp):
    """The demo's student from random init, exported: (the student, the export folder)."""
    from nd_common.configs import DEFAULT_STUDENT_CONFIG, load_demo_cfg, without_demo_keys

    cfg = without_demo_keys(load_demo_cfg(DEFAULT_STUDENT_CONFIG, ["MODEL.DEVICE", "cpu"]))
    torch.manual_seed(0)
    student_cfg = plain_student_cfg(cfg)
    model = build_model(student_cfg)
    (tmp / "train").mkdir()
    DetectionCheckpointer(model, str(tmp / "train")).save("model_final")
    (tmp / "train" / "config.yaml").write_text(student_cfg.dump())
    export_student(
        cfg, str(tmp / "train" / "model_final.pth"), str(tmp / "deploy"), allow_non_distilled=True
    )
    return model.eval(), str(tmp / "deploy")


@dataclass
class SharedExport:
    """A student exported by export_student (``deploy``) with ``model.pt2`` and ``model.onnx``
    written by one run of tools/export_model.py (``--format pt2 onnx``) checked on
    ``images[0]``."""

    name: str
    folder: str
    deploy: str
    images: list[str]
    code: int  # the tool's exit status, its stdout and stderr
    stdout: str
    stderr: str
    pt2_loads: int  # times the tool loaded model.pt2 (its parity check), in the building process

    def reference(self) -> torch.nn.Module:
        """The model of the training checkpoint (DistillRCNN, or the demo's plain student),
        eval mode: what the deploy files must reproduce."""
        cfg = load_config(os.path.join(self.folder, "train", "config.yaml"))
        model = build_model(cfg)
        DetectionCheckpointer(model).load(os.path.join(self.folder, "train", "model_final.pth"))
        return model.eval()

    def program(self) -> torch.export.ExportedProgram:
        """model.pt2, as the tool loaded it when it was made in this process (loading takes
        seconds), else loaded now."""
        if self.name not in _PROGRAMS:
            _PROGRAMS[self.name] = torch.export.load(os.path.join(self.deploy, "model.pt2"))
        return _PROGRAMS[self.name]


def _build(name: str, folder) -> dict:
    folder.mkdir(parents=True)
    if name == "demo":
        demo_export(folder)
    else:
        distilled_export(folder, *SHARED_STUDENTS[name])
    images = [
        write_image(folder / f"image{i}.png", h, w, seed=i)
        for i, (h, w) in enumerate(SHARED_IMAGES[name])
    ]
    load, loaded = torch.export.load, []

    def keep(f):
        loaded.append(load(f))
        return loaded[-1]

    out = io.StringIO()
    torch.export.load = keep
    try:
        with contextlib.redirect_stdout(out):
            code, err = run_tool_in_process(
                EXPORT_MODEL,
                [
                    "--export-dir",
                    str(folder / "deploy"),
                    "--format",
                    "pt2",
                    "onnx",
                    "--image",
                    images[0],
                ],
            )
    finally:
        torch.export.load = load
    if loaded:
        _PROGRAMS[name] = loaded[-1]
    return dict(images=images, code=code, stdout=out.getvalue(), stderr=err, pt2_loads=len(loaded))


def shared_export(tmp_path_factory, name: str) -> SharedExport:
    """The shared export of ``name`` (a key of :data:`SHARED_STUDENTS`), made on first use."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by the workers
    folder = root / "shared_exports" / name
    record = folder / "made.json"
    folder.parent.mkdir(exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not record.exists():
            made = _build(name, folder)
            record.write_text(json.dumps(made))
        made = json.loads(record.read_text())
    return SharedExport(name, str(folder), str(folder / "deploy"), **made)
