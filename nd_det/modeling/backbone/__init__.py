"""Student backbones detectron2 lacks.  Importing this package registers, in detectron2's
BACKBONE_REGISTRY, ``build_mobilenetv2_backbone`` (bottom-up MobileNetV2) and
``build_mobilenetv2_fpn_backbone``.  ResNet-18/34 students use detectron2's own
``build_resnet_fpn_backbone``; :func:`check_resnet_basic_config` names the keys they need.
Their config keys are added by :func:`nd_det.config.add_backbone_config`."""
from .fpn import build_mobilenetv2_fpn_backbone, fpn_over
from .mobilenetv2 import (
    InvertedResidual,
    MobileNetV2,
    MobileNetV2Stem,
    build_mobilenetv2_backbone,
    check_mobilenetv2_config,
)
from .resnet_basic import check_resnet_basic_config

__all__ = [
    "build_mobilenetv2_backbone",
    "build_mobilenetv2_fpn_backbone",
    "fpn_over",
    "check_resnet_basic_config",
    "check_mobilenetv2_config",
    "MobileNetV2",
    "MobileNetV2Stem",
    "InvertedResidual",
]
