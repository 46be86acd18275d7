"""Student backbones detectron2 lacks.  Importing this package registers, in detectron2's
BACKBONE_REGISTRY: ``build_resnet_basic_fpn_backbone`` (ResNet-18/34 + FPN),
``build_mobilenetv2_backbone`` (bottom-up MobileNetV2) and ``build_mobilenetv2_fpn_backbone``."""
from .config import add_backbone_config
from .fpn import build_mobilenetv2_fpn_backbone, build_resnet_basic_fpn_backbone
from .mobilenetv2 import (
    InvertedResidual,
    MobileNetV2,
    MobileNetV2Stem,
    build_mobilenetv2_backbone,
    check_mobilenetv2_config,
)
from .resnet_basic import check_resnet_basic_config

__all__ = [
    "add_backbone_config",
    "build_resnet_basic_fpn_backbone",
    "build_mobilenetv2_backbone",
    "build_mobilenetv2_fpn_backbone",
    "check_resnet_basic_config",
    "check_mobilenetv2_config",
    "MobileNetV2",
    "MobileNetV2Stem",
    "InvertedResidual",
]
