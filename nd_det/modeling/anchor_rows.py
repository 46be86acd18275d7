"""The rows a one-stage detector's training step hands the distillation terms, and the
classification branch of its head.

detectron2's RetinaNet and FCOS label every anchor of a batch (``label_anchors``): a class,
NUM_CLASSES (background) or -1 (ignored: RetinaNet's IoU band between its two thresholds).
Their losses concatenate the levels, each map flattened in (H, W, A) order
(``permute_to_N_HWA_K``), so anchor ``r`` of an image lies at location ``r // A`` of the
levels' locations concatenated in the same order, A being the anchors per location.
:class:`AnchorRows` turns a batch's labels into the terms' rows: one per positive anchor for the
embeddings (the classification tower's output at its location: ND, the mechanism), one per
anchor the classification loss counts for the logits (KD).  Student and teacher are read at the
same rows, so both have the same levels, strides and anchors per location
(:func:`anchor_layout`).
"""

import contextlib
import functools
from dataclasses import dataclass

import torch
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from torch import nn

from .shapes import ModelShapes

__all__ = [
    "AnchorRows",
    "dense_head_outputs",
    "recorded_outputs",
    "anchor_layout",
    "anchors_per_location",
    "dense_shapes",
]


@dataclass
class AnchorRows:
    """The rows of one step: ``labels`` (N, R) as ``label_anchors`` gives them, stacked."""

    labels: torch.Tensor
    num_classes: int
    anchors_per_location: int

    @functools.cached_property
    def positive(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(image index, anchor index) of each positive anchor."""
        return ((self.labels >= 0) & (self.labels < self.num_classes)).nonzero(as_tuple=True)

    @property
    def positive_labels(self) -> torch.Tensor:
        return self.labels[self.positive]

    def embeddings(self, towers: list[torch.Tensor]) -> torch.Tensor:
        """(P, C): the tower's output (one (N, C, H, W) map per level) at each positive
        anchor's location."""
        flat = torch.cat([t.permute(0, 2, 3, 1).flatten(1, 2) for t in towers], dim=1)
        image, anchor = self.positive
        return flat[image, anchor // self.anchors_per_location]

    def logits(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(M, K): the class logits (one (N, A*K, H, W) map per level) of every anchor the
        classification loss counts (label >= 0)."""
        flat = torch.cat([permute_to_N_HWA_K(x, self.num_classes) for x in maps], dim=1)
        return flat[self.labels >= 0]


def dense_head_outputs(head: nn.Module, maps: list[torch.Tensor]):
    """The classification branch of a RetinaNetHead / FCOSHead on ``maps``: (the tower's
    output, the class logits), one map per level."""
    towers = [head.cls_subnet(x) for x in maps]
    return towers, [head.cls_score(t) for t in towers]


@contextlib.contextmanager
def recorded_outputs(module: nn.Module):
    """A list that receives every output of ``module`` while the block runs (the student's
    head runs as detectron2 wrote it; its tower's outputs are recorded on the way)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _module, _inputs, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def anchors_per_location(model: nn.Module) -> int:
    """A RetinaNet's / FCOS's anchors per location (the same on every level)."""
    return int(model.anchor_generator.num_cell_anchors[0])


def anchor_layout(model: nn.Module) -> tuple:
    """(strides of the head's levels, anchors per location, size divisibility) of a built
    RetinaNet / FCOS: what must match for student and teacher rows to be the same anchors."""
    shapes = model.backbone.output_shape()
    return (
        tuple(shapes[f].stride for f in model.head_in_features),
        anchors_per_location(model),
        int(model.backbone.size_divisibility),
    )


def dense_shapes(backbone: nn.Module, head: nn.Module) -> ModelShapes:
    """The backbone's levels and the classification tower's width (the embedding ND compares:
    the input of the head's ``cls_score``)."""
    return ModelShapes(dict(backbone.output_shape()), int(head.cls_score.in_channels))
