"""``--format pt2``: the student as a ``torch.export`` ExportedProgram (``model.pt2``).

The program is :class:`nd_det.export.graph.ExportableStudent` exported with
``torch.export.export(strict=False)`` and dynamic height and width, so one file serves every
image size from :func:`~nd_det.export.graph.min_image_side` up.  Load it with
``torch.export.load("model.pt2").module()`` (torch and torchvision only: the graph calls
torchvision's ``nms`` and ``roi_align`` ops), or compile it for C++ serving with AOTInductor
(``torch._inductor.aoti_compile_and_package``).

Each format module of ``tools/export_model.py`` (this one, :mod:`.onnx_export`,
:mod:`.torchscript`) has the same names: FILE_NAME, WHAT, EXPORTER, ``require``,
``check_model``, ``min_side``, ``sizes``, ``versions``, ``build``, ``save``, ``load``.
"""

from collections.abc import Sequence
from typing import BinaryIO, Callable, Optional

import torch
from detectron2.config import CfgNode

from ..errors import ConfigError
from .exportable import check_exportable, exportable
from .graph import dynamic_image_shapes, exporting, min_image_side
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

FILE_NAME = DEPLOY_FILE_NAMES["pt2"]
WHAT = "torch.export.load(model.pt2).module()"
EXPORTER = "torch.export.export(strict=False) of nd_det.export.graph.ExportableStudent"


def require(device: str) -> None:
    """Refuse what this format cannot do, before any work."""
    if device != "cpu":
        raise ConfigError(
            f"--device {device}: .pt2 and .onnx are exported on the CPU; leave it out"
        )


def check_model(cfg: CfgNode, model: torch.nn.Module) -> None:
    check_exportable(model)


def min_side(model: torch.nn.Module) -> int:
    return min_image_side(model)


def sizes(model: torch.nn.Module) -> str:
    return f"dynamic: any height and width of at least {min_image_side(model)} pixels"


def versions() -> dict[str, str]:
    return {}


def build(
    model: torch.nn.Module, image: torch.Tensor, shared: Optional[dict] = None
) -> tuple[torch.export.ExportedProgram, dict[str, object], list[str]]:
    """(the ExportedProgram, what the record says about it, notes); the program is also left in
    ``shared`` for the ONNX export of the same run."""
    shared = {} if shared is None else shared
    with exporting():
        shared["program"] = torch.export.export(
            exportable(model),
            (image,),
            strict=False,
            dynamic_shapes=dynamic_image_shapes(model),
        )
    return shared["program"], {}, []


def save(program: torch.export.ExportedProgram, file: BinaryIO) -> None:
    torch.export.save(program, file)


def load(path: str, device: str) -> Callable[[torch.Tensor], Sequence[torch.Tensor]]:
    with open(path, "rb") as file:  # a file object: torch.export.load wants a .pt2 name
        module = torch.export.load(file).module()
    return lambda image: module(image)
