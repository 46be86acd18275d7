"""Student backbones detectron2 lacks.  Importing this package registers, in detectron2's
BACKBONE_REGISTRY, ``build_torchvision_backbone`` / ``build_torchvision_fpn_backbone`` (any
torchvision classification model, MobileNetV2 and MobileNetV3 included, ``MODEL.TORCHVISION``;
:func:`check_torchvision_config` validates its keys).  ResNet-18/34 students use detectron2's own
``build_resnet_fpn_backbone``; :func:`check_resnet_basic_config` names the keys they need.
Their config keys are added by :func:`nd_det.config.add_backbone_config`."""

from .norm_conversion import BATCH_NORM_CHOICES, convert_batch_norms
from .resnet_basic import check_resnet_basic_config
from .torchvision_bottom_up import TorchvisionBottomUp
from .torchvision_config import check_torchvision_config, torchvision_stages
from .torchvision_fpn import build_torchvision_backbone, build_torchvision_fpn_backbone, fpn_over
from .torchvision_stages import TORCHVISION_DEFAULT_STAGES, build_torchvision_classifier

__all__ = [
    "fpn_over",
    "check_resnet_basic_config",
    "build_torchvision_backbone",
    "build_torchvision_fpn_backbone",
    "check_torchvision_config",
    "torchvision_stages",
    "TorchvisionBottomUp",
    "TORCHVISION_DEFAULT_STAGES",
    "build_torchvision_classifier",
    "BATCH_NORM_CHOICES",
    "convert_batch_norms",
]
