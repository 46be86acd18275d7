"""``build_torchvision_fpn_backbone``: any torchvision classification model
(``MODEL.TORCHVISION``) under detectron2's FPN, registered in its BACKBONE_REGISTRY.

With the four default stages (strides 4..32) and ``MODEL.FPN.IN_FEATURES`` set to all of
``MODEL.TORCHVISION.OUT_FEATURES`` it returns p2..p6 (strides 4..64, ``MODEL.FPN.OUT_CHANNELS``
channels, p6 max-pooled from p5) exactly like detectron2's ``build_resnet_fpn_backbone``, so
the RPN, the ROI heads and ReviewKD work unchanged; with fewer stages (e.g. c2..c4) the extra
level follows the deepest one (p2..p5).  Example::

    MODEL:
      BACKBONE: {NAME: "build_torchvision_fpn_backbone"}
      TORCHVISION: {ARCH: "mobilenet_v3_large"}
      FPN: {IN_FEATURES: ["c2", "c3", "c4", "c5"]}
"""

import math

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ...errors import ConfigError, input_stage
from .torchvision_bottom_up import TorchvisionBottomUp
from .torchvision_config import torchvision_stages
from .torchvision_stages import build_torchvision_classifier

__all__ = ["fpn_over", "build_torchvision_backbone", "build_torchvision_fpn_backbone"]

# (arch, width, stages) -> (channels, stride) of each stage, measured by a first build
_MEASURED: dict[tuple, list[tuple[int, int]]] = {}


def fpn_over(bottom_up: Backbone, cfg, out_features_key: str) -> FPN:
    """detectron2's FPN (``MODEL.FPN``) over ``bottom_up``, with a max-pooled extra level."""
    available = list(bottom_up.output_shape())
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    if not in_features or not set(in_features) <= set(available):
        raise ConfigError(
            f"MODEL.FPN.IN_FEATURES {in_features}: take them from {out_features_key} {available}"
        )
    # the extra max-pooled level comes from the deepest FPN level, whichever stage that is
    top_block = LastLevelMaxPool()
    deepest_stride = bottom_up.output_shape()[in_features[-1]].stride
    top_block.in_feature = f"p{int(math.log2(deepest_stride))}"
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_torchvision_backbone(cfg, input_shape: ShapeSpec) -> TorchvisionBottomUp:
    """The bottom-up network alone (random weights; MODEL.WEIGHTS loads afterwards)."""
    tv = cfg.MODEL.TORCHVISION
    with input_stage("MODEL.TORCHVISION"):
        model = build_torchvision_classifier(tv.ARCH, float(tv.WIDTH_MULT))
        stages = torchvision_stages(cfg)
        key = (tv.ARCH, float(tv.WIDTH_MULT), tuple(stages))
        bottom_up = TorchvisionBottomUp(
            model,
            stages=stages,
            out_features=tv.OUT_FEATURES,
            norm=tv.NORM,
            freeze_at=tv.FREEZE_AT,
            arch=tv.ARCH,
            shapes=_MEASURED.get(key),
        )
        # the first build of an architecture in a process measures; later ones reuse it
        _MEASURED[key] = [(s.channels, s.stride) for s in bottom_up.output_shape().values()]
        return bottom_up


@BACKBONE_REGISTRY.register()
def build_torchvision_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """torchvision classifier (``MODEL.TORCHVISION``) + FPN + p6 max-pool."""
    return fpn_over(
        build_torchvision_backbone(cfg, input_shape), cfg, "MODEL.TORCHVISION.OUT_FEATURES"
    )
