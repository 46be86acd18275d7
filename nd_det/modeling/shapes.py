"""What the distillation terms need to know of a model before any weight exists: its backbone
levels and the width of its RoI embedding, read from built modules; and the one way to build a
config's model on PyTorch's "meta" device (no memory, no weights, a fraction of a second), so a
mismatch is found before anything real is built or written."""

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ..errors import input_stage

__all__ = ["ModelShapes", "shapes_of", "build_on_meta"]

# Loading a weights file into a model on the meta device checks its names and shapes only (the
# checks before a run); torch warns once per module that the copy is a no-op: that is the point.
warnings.filterwarnings(
    "ignore",
    message=".*copying from a non-meta parameter.*to a meta parameter",
    category=UserWarning,
)


@dataclass
class ModelShapes:
    levels: dict[str, ShapeSpec]  # backbone output name -> channels / stride
    embedding_dim: Optional[int]  # RoI box-head output width; None if it is not flat


def shapes_of(backbone, roi_heads, box_head=None) -> ModelShapes:
    """``box_head``: the one whose output is the RoI embedding (default ``roi_heads.box_head``;
    a Cascade teacher's chosen stage)."""
    shape = (roi_heads.box_head if box_head is None else box_head).output_shape
    flat = not (shape.height or shape.width)
    return ModelShapes(dict(backbone.output_shape()), int(shape.channels) if flat else None)


def build_on_meta(cfg: CfgNode, what: str = "the model of this config") -> nn.Module:
    """The detector ``cfg`` describes, built by its META_ARCHITECTURE on the meta device: every
    builder's own check runs, a DistillRCNN builds its teacher (without weights) and its
    distillation terms (the class-means table read), and what detectron2 refuses is one line
    naming ``what``."""
    with input_stage(f"building {what}"), torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
