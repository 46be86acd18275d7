"""What the distillation terms need to know of a model before any weight exists: its backbone
levels and the width of its RoI embedding.  Read from built modules, or from a config by
building the backbone and ROI heads on PyTorch's "meta" device (no memory, no weights, a few
milliseconds), so a mismatch is found before anything real is built."""

from dataclasses import dataclass
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.roi_heads import build_roi_heads

from ..errors import ConfigError
from ..utils.text import first_line

__all__ = ["ModelShapes", "shapes_of", "shapes_from_config", "state_shapes_from_config"]


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


def shapes_from_config(cfg: CfgNode, what: str) -> ModelShapes:
    """The shapes of the model ``cfg`` describes; a config detectron2 cannot build is a
    ConfigError naming ``what`` ("the student", "the teacher")."""
    try:
        with torch.device("meta"):
            backbone = build_backbone(cfg)
            roi_heads = build_roi_heads(cfg, backbone.output_shape())
    except Exception as e:  # noqa: BLE001 - builders reject bad configs with many error types
        raise ConfigError(
            f"{what} cannot be built from its config ({first_line(e)}): check its "
            "MODEL.BACKBONE / MODEL.RESNETS / MODEL.FPN / MODEL.ROI_* keys"
        ) from None
    return shapes_of(backbone, roi_heads)


def state_shapes_from_config(cfg: CfgNode, what: str) -> dict[str, tuple]:
    """``{state-dict key: shape}`` of the whole detector ``cfg`` describes (a plain one, e.g. a
    GeneralizedRCNN), built on the meta device: what a weights file must hold."""
    try:
        with torch.device("meta"):
            model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    except Exception as e:  # noqa: BLE001 - builders reject bad configs with many error types
        raise ConfigError(f"{what} cannot be built from its config ({first_line(e)})") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
