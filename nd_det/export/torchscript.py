"""The exported student as TorchScript (``tools/export_torchscript.py`` is the command line).

From the folder :func:`nd_det.export.export_student` wrote (``config.yaml`` +
``model_final.pth``), :func:`export_torchscript` builds the student, traces its inference with
detectron2's export tooling (``detectron2.export.TracingAdapter`` + ``torch.jit.trace``) on one
image, saves the traced module, loads the file back and checks that it gives the same
detections as the student in Python on that image before it puts the file in place::

    model.ts        the traced student: image -> (boxes, scores, classes)
    model.ts.json   how to feed it and read it (channel order, resize), and the check made

The traced module takes one image as a float32 (3, H, W) tensor of 0..255 pixels in the
config's ``INPUT.FORMAT`` channel order, already resized as detectron2's DefaultPredictor does
(shortest side ``INPUT.MIN_SIZE_TEST``, longest at most ``INPUT.MAX_SIZE_TEST``); it normalises
inside.  It returns boxes (N, 4; x1, y1, x2, y2 in that image's pixels), scores (N,) and classes
(N,, int64), after the detector's own score threshold and NMS.  Loading it needs only
``torch`` and ``torchvision`` (whose ``nms`` / ``roi_align`` ops it calls): no detectron2, no
nd-det.
"""
import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.export import TracingAdapter
from detectron2.modeling import build_model

from ..config import add_backbone_config, merge_config
from ..errors import ConfigError, ExportError
from ..modeling import backbone as _backbones  # noqa: F401  (registers nd-det's backbones)
from ..modeling.student_checkpoint import load_student_checkpoint
from ..utils.atomic_file import atomic_write, atomic_write_json
from ..utils.paths import check_writable
from ..utils.text import first_line
from .student import (EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, TORCHSCRIPT_INFO_SUFFIX,
                      TORCHSCRIPT_NAME)

__all__ = [
    "TORCHSCRIPT_NAME",
    "TORCHSCRIPT_INFO_SUFFIX",
    "BOX_TOLERANCE",
    "SCORE_TOLERANCE",
    "TorchScriptExport",
    "load_exported_student",
    "deploy_image",
    "student_detections",
    "compare_detections",
    "export_torchscript",
]

# the round trip: largest differences accepted between TorchScript and Python (boxes in pixels)
BOX_TOLERANCE = 1e-3
SCORE_TOLERANCE = 1e-5


@dataclass
class TorchScriptExport:
    """What :func:`export_torchscript` wrote and checked."""

    path: str
    info_path: str
    image: str
    input_size: Tuple[int, int]
    detections: int
    max_box_diff: float
    max_score_diff: float
    trace_seconds: float
    # where the tracer warned that a tensor became a Python value ("file:line", once each)
    tracer_warnings: List[str] = field(default_factory=list)


def load_exported_student(export_dir: str, device: str = "cpu") -> Tuple[CfgNode, torch.nn.Module]:
    """The config and the eval-mode student of an export folder, its weights loaded strictly."""
    config_file = os.path.join(export_dir, EXPORT_CONFIG_NAME)
    weights_file = os.path.join(export_dir, EXPORT_WEIGHTS_NAME)
    for path in (config_file, weights_file):
        if not os.path.isfile(path):
            raise ConfigError(
                f"--export-dir {export_dir}: {os.path.basename(path)} not found; give the folder "
                "tools/export_student.py wrote (config.yaml + model_final.pth)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device here; use cpu")
    cfg = add_backbone_config(get_cfg())
    merge_config(cfg, config_file, config_file)
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise ConfigError(
            f"{config_file} has MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}, not "
            "GeneralizedRCNN: export the student first with tools/export_student.py")
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = weights_file
    cfg.freeze()
    model = build_model(cfg)
    load_student_checkpoint(model, weights_file, what=weights_file,
                            hint="give the folder tools/export_student.py wrote",
                            error=ConfigError)
    return cfg, model.eval()


def deploy_image(cfg: CfgNode, image_path: str) -> torch.Tensor:
    """The image file as the traced module takes it: float32 (3, H, W), 0..255, channels in
    ``INPUT.FORMAT``, resized as detectron2's DefaultPredictor resizes."""
    if not os.path.isfile(image_path):
        raise ConfigError(f"--image {image_path}: file not found; give an image file")
    try:
        image = read_image(image_path, format=cfg.INPUT.FORMAT)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for files that are not images
        raise ConfigError(
            f"--image {image_path} cannot be read as an image ({first_line(e)}); give a JPEG or "
            "PNG file") from None
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def student_detections(model: torch.nn.Module, image: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes, scores, classes) of one image, in that image's pixels: what gets traced."""
    instances = model.inference([{"image": image}], do_postprocess=False)[0]
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def compare_detections(python, traced) -> Tuple[float, float]:
    """Largest box and score differences; raises ExportError when the detections
    are not the same."""
    (boxes, scores, classes), (ts_boxes, ts_scores, ts_classes) = python, traced
    if len(ts_boxes) != len(boxes) or not torch.equal(ts_classes, classes):
        raise ExportError(
            f"TorchScript gives {len(ts_boxes)} detections (classes {ts_classes.tolist()[:10]}), "
            f"Python {len(boxes)} (classes {classes.tolist()[:10]}): tracing lost part of the "
            "model; nothing was written")
    box_diff = float((ts_boxes - boxes).abs().max()) if len(boxes) else 0.0
    score_diff = float((ts_scores - scores).abs().max()) if len(boxes) else 0.0
    if box_diff > BOX_TOLERANCE or score_diff > SCORE_TOLERANCE:
        raise ExportError(
            f"TorchScript and Python detections differ: max |box diff| {box_diff:.3g} px "
            f"(tolerance {BOX_TOLERANCE}), max |score diff| {score_diff:.3g} (tolerance "
            f"{SCORE_TOLERANCE}); nothing was written")
    return box_diff, score_diff


def _info(cfg: CfgNode, result: TorchScriptExport, device: str) -> dict:
    return {
        "format": "nd_det.torchscript/1",
        "input": {
            "tensor": "float32 (3, H, W), pixel values 0..255 (normalised inside)",
            "channel_order": cfg.INPUT.FORMAT,
            "resize": {"shortest_side": cfg.INPUT.MIN_SIZE_TEST,
                       "longest_side_at_most": cfg.INPUT.MAX_SIZE_TEST},
        },
        "outputs": {
            "boxes": "float32 (N, 4): x1, y1, x2, y2 in the input tensor's pixels",
            "scores": "float32 (N,)",
            "classes": "int64 (N,): contiguous class ids 0..NUM_CLASSES-1",
        },
        "device": device,
        "check": {"image": os.path.basename(result.image), "input_size": list(result.input_size),
                  "detections": result.detections, "max_box_diff": result.max_box_diff,
                  "max_score_diff": result.max_score_diff,
                  "tracer_warnings": result.tracer_warnings},
        "torch": torch.__version__,
    }


@contextlib.contextmanager
def _collect_tracer_warnings(sites: List[str]):
    """Gather the tracer's warnings instead of printing them: detectron2's inference code turns
    tensors into Python values (box-size and shape checks), which a trace freezes, and says so
    a dozen times per trace; the round trip (and docs/deploy.md's second-size check) is what
    tells whether the file is right.  Every other warning is shown as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            parts = warning.filename.replace(os.sep, "/").split("/")
            start = max((i for i, part in enumerate(parts) if part in ("detectron2", "torch",
                                                                       "torchvision", "nd_det")),
                        default=len(parts) - 1)
            site = f"{'/'.join(parts[start:])}:{warning.lineno}"
            if site not in sites:
                sites.append(site)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)


def export_torchscript(export_dir: str, image_path: str, output: Optional[str] = None,
                       device: str = "cpu", overwrite: bool = False) -> TorchScriptExport:
    """Trace the student of ``export_dir`` on ``image_path``, check the saved module against
    the student on that image, and write ``output`` (default ``<export_dir>/model.ts``) and
    ``output + ".json"``.  Raises ConfigError for bad input and
    ExportError when the round trip differs; nothing is written in both cases."""
    output = os.path.abspath(output or os.path.join(export_dir, TORCHSCRIPT_NAME))
    info_path = output + TORCHSCRIPT_INFO_SUFFIX
    check_writable(output, "--output")
    if os.path.exists(output) and not overwrite:
        raise ConfigError(f"--output {output} exists; pass --overwrite to replace it")
    cfg, model = load_exported_student(export_dir, device)
    image = deploy_image(cfg, image_path).to(device)

    start = time.perf_counter()
    adapter = TracingAdapter(model, image, student_detections)
    tracer_warnings: List[str] = []
    with torch.no_grad(), _collect_tracer_warnings(tracer_warnings):
        # check_trace re-runs with exact comparison; the round trip below checks with tolerances
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
    trace_seconds = time.perf_counter() - start

    outcome = {}

    def check_saved(staged: str) -> None:
        reloaded = torch.jit.load(staged, map_location=device)
        with torch.no_grad():
            python = student_detections(model, image)
            box_diff, score_diff = compare_detections(python, tuple(reloaded(image)))
        outcome["result"] = TorchScriptExport(
            path=output, info_path=info_path, image=os.path.abspath(image_path),
            input_size=(int(image.shape[1]), int(image.shape[2])), detections=len(python[0]),
            max_box_diff=box_diff, max_score_diff=score_diff, trace_seconds=trace_seconds,
            tracer_warnings=tracer_warnings)

    # compare_detections raises ExportError before the file reaches its name
    atomic_write(output, lambda f: torch.jit.save(traced, f), verify=check_saved)
    result = outcome["result"]
    atomic_write_json(_info(cfg, result, device), info_path)
    return result

