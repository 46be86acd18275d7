"""``--format torchscript`` (legacy): the student traced to TorchScript (``model.ts``).

detectron2's export tooling (``detectron2.export.TracingAdapter`` + ``torch.jit.trace``) traces
the student's own inference on one image.  torch 2.14 deprecates TorchScript (``torch.jit.trace``
/ ``save`` / ``load`` print a FutureWarning; a later torch may drop them): ``--format pt2`` and
``--format onnx`` are the routes that replace it.  Loading the file needs only ``torch`` and
``torchvision`` (whose ``nms`` / ``roi_align`` ops it calls): no detectron2, no nd-det.  The
trace keeps the device it was made on (``--device``).

Same names as the other format modules (see :mod:`.program`).
"""

import contextlib
import os
import warnings
from collections.abc import Sequence
from typing import BinaryIO, Callable, Optional

import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter

from .contract import student_detections
from .student import DEPLOY_FILE_NAMES

__all__ = [
    "FILE_NAME",
    "WHAT",
    "EXPORTER",
    "require",
    "check_model",
    "min_side",
    "sizes",
    "versions",
    "build",
    "save",
    "load",
]

FILE_NAME = DEPLOY_FILE_NAMES["torchscript"]
WHAT = "TorchScript"
EXPORTER = "detectron2.export.TracingAdapter + torch.jit.trace (legacy: deprecated by torch)"


def require(device: str) -> None:
    """Any device (the trace runs there)."""


def check_model(cfg: CfgNode, model: torch.nn.Module) -> None:
    """Every GeneralizedRCNN traces."""


def min_side(model: torch.nn.Module) -> int:
    return 1


def sizes(model: torch.nn.Module) -> str:
    return "traced on one size; other sizes run the same code (the check runs a second size)"


def versions() -> dict[str, str]:
    return {}


@contextlib.contextmanager
def _collect_tracer_warnings(sites: list[str]):
    """Gather the tracer's warnings instead of printing them: detectron2's inference code turns
    tensors into Python values (box-size and shape checks), which a trace freezes, and says so
    a dozen times per trace; the parity check on two sizes is what tells whether the file is
    right.  Every other warning is shown as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            parts = warning.filename.replace(os.sep, "/").split("/")
            start = max(
                (
                    i
                    for i, part in enumerate(parts)
                    if part in ("detectron2", "torch", "torchvision", "nd_det")
                ),
                default=len(parts) - 1,
            )
            site = f"{'/'.join(parts[start:])}:{warning.lineno}"
            if site not in sites:
                sites.append(site)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def build(
    model: torch.nn.Module, image: torch.Tensor, shared: Optional[dict] = None
) -> tuple[torch.jit.ScriptModule, dict[str, object], list[str]]:
    """(the traced module, what the record says about it: the places the tracer warned at,
    notes)."""
    adapter = TracingAdapter(model, image, student_detections)
    sites: list[str] = []
    with torch.no_grad(), _collect_tracer_warnings(sites):
        # check_trace re-runs with exact comparison; the parity check compares with tolerances
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
    return traced, {"tracer_warnings": sites}, []


def save(traced: torch.jit.ScriptModule, file: BinaryIO) -> None:
    torch.jit.save(traced, file)


def load(path: str, device: str) -> Callable[[torch.Tensor], Sequence[torch.Tensor]]:
    module = torch.jit.load(path, map_location=device)
    return lambda image: tuple(module(image))
