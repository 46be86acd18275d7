"""``build_torchvision_fpn_backbone``: any torchvision classification model
(``MODEL.TORCHVISION``) under detectron2's FPN, registered in its BACKBONE_REGISTRY.

With the four default stages (strides 4..32) and ``MODEL.FPN.IN_FEATURES`` set to all of
``MODEL.TORCHVISION.OUT_FEATURES`` it returns p2..p6 (strides 4..64, ``MODEL.FPN.OUT_CHANNELS``
channels, p6 max-pooled from p5) exactly like detectron2's ``build_resnet_fpn_backbone``, so
the RPN, the ROI heads and ReviewKD work unchanged.  Example::

    MODEL:
      BACKBONE: {NAME: "build_torchvision_fpn_backbone"}
      TORCHVISION: {ARCH: "mobilenet_v3_large"}
      FPN: {IN_FEATURES: ["c2", "c3", "c4", "c5"]}
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN

from .fpn import fpn_over
from .torchvision_bottom_up import TorchvisionBottomUp
from .torchvision_config import check_torchvision_config, torchvision_stages
from .torchvision_stages import build_torchvision_classifier

__all__ = ["build_torchvision_backbone", "build_torchvision_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_torchvision_backbone(cfg, input_shape: ShapeSpec) -> TorchvisionBottomUp:
    """The bottom-up network alone (random weights; MODEL.WEIGHTS loads afterwards)."""
    check_torchvision_config(cfg)
    tv = cfg.MODEL.TORCHVISION
    return TorchvisionBottomUp(
        build_torchvision_classifier(tv.ARCH, float(tv.WIDTH_MULT)),
        stages=torchvision_stages(cfg),
        out_features=tv.OUT_FEATURES,
        norm=tv.NORM,
        freeze_at=tv.FREEZE_AT,
        arch=tv.ARCH,
    )


@BACKBONE_REGISTRY.register()
def build_torchvision_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """torchvision classifier (``MODEL.TORCHVISION``) + FPN + p6 max-pool."""
    return fpn_over(build_torchvision_backbone(cfg, input_shape), cfg,
                    "MODEL.TORCHVISION.OUT_FEATURES")
