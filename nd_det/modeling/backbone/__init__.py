"""Student backbones detectron2 lacks.  Importing this package registers, in detectron2's
BACKBONE_REGISTRY, ``build_torchvision_backbone`` / ``build_torchvision_fpn_backbone`` (any
torchvision classification model, MobileNetV2 and MobileNetV3 included, ``MODEL.TORCHVISION``).
ResNet-18/34 students use detectron2's own ``build_resnet_fpn_backbone`` (MODEL.RESNETS.DEPTH 18
or 34 with RES2_OUT_CHANNELS 64: detectron2 asserts the keys it needs).  The config keys are
added by :func:`nd_det.config.add_backbone_config`."""

from .norm_conversion import BATCH_NORM_CHOICES, convert_batch_norms
from .torchvision_bottom_up import TorchvisionBottomUp
from .torchvision_config import torchvision_stages
from .torchvision_fpn import build_torchvision_backbone, build_torchvision_fpn_backbone, fpn_over
from .torchvision_stages import TORCHVISION_DEFAULT_STAGES, build_torchvision_classifier

__all__ = [
    "fpn_over",
    "build_torchvision_backbone",
    "build_torchvision_fpn_backbone",
    "torchvision_stages",
    "TorchvisionBottomUp",
    "TORCHVISION_DEFAULT_STAGES",
    "build_torchvision_classifier",
    "BATCH_NORM_CHOICES",
    "convert_batch_norms",
]
