"""Which graph a student exports as: :class:`~nd_det.export.graph.ExportableStudent` for a
Faster R-CNN, :class:`~nd_det.export.dense_graph.ExportableDenseStudent` for a RetinaNet / FCOS
(its own module, since the dense graph builds on the two-stage one)."""

import torch
from detectron2.modeling.proposal_generator import RPN
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, StandardROIHeads

from ..errors import ConfigError
from .dense_graph import ExportableDenseStudent, is_dense_student
from .graph import ExportableStudent

__all__ = ["exportable", "check_exportable"]


def exportable(model: torch.nn.Module) -> torch.nn.Module:
    """The module torch.export and the ONNX exporter see for ``model``, in eval mode:
    :class:`ExportableStudent`, or a one-stage student's
    :class:`~nd_det.export.dense_graph.ExportableDenseStudent`."""
    return (ExportableDenseStudent if is_dense_student(model) else ExportableStudent)(model).eval()


def check_exportable(model: torch.nn.Module) -> None:
    """Refuse a detector :func:`exportable` does not cover (one line naming it)."""
    heads, proposals = getattr(model, "roi_heads", None), getattr(model, "proposal_generator", None)
    if not is_dense_student(model) and not (
        type(proposals) is RPN
        and type(heads) is StandardROIHeads  # Cascade heads run three box stages
        and not (heads.mask_on or heads.keypoint_on)
        and type(heads.box_predictor) is FastRCNNOutputLayers
    ):
        raise ConfigError(
            f"the student ({type(proposals).__name__}, {type(heads).__name__}"
            f", mask_on {getattr(heads, 'mask_on', None)}) is not a Faster R-CNN (RPN + StandardROI"
            "Heads, boxes only) nor a RetinaNet / FCOS, which torch.export / ONNX cover: use "
            "--format torchscript"
        )
