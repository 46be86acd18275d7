"""``build_mobilenetv2_fpn_backbone``: :class:`MobileNetV2` (``MODEL.MOBILENETV2``) under
detectron2's FPN, registered in its BACKBONE_REGISTRY.

(ResNet-18/34 students need no builder of nd-det's: detectron2's ``build_resnet_fpn_backbone``
builds them with ``MODEL.RESNETS.DEPTH 18/34`` and ``RES2_OUT_CHANNELS 64``.)

One more level comes from max-pooling the deepest FPN level (``LastLevelMaxPool``), so with
``MODEL.FPN.IN_FEATURES`` at all four stages it returns p2..p6 at strides 4..64 with
``MODEL.FPN.OUT_CHANNELS`` channels, exactly like detectron2's ``build_resnet_fpn_backbone``;
with fewer stages (e.g. m2..m4) the extra level follows the deepest one (p2..p5).
"""
import math

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .mobilenetv2 import build_mobilenetv2_backbone

__all__ = ["build_mobilenetv2_fpn_backbone", "fpn_over"]


def fpn_over(bottom_up: Backbone, cfg, out_features_key: str) -> FPN:
    """detectron2's FPN (``MODEL.FPN``) over ``bottom_up``, with a max-pooled extra level."""
    available = list(bottom_up.output_shape().keys())
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    missing = [name for name in in_features if name not in available]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES is {in_features!r}, but the bottom-up network returns "
            f"{available} ({out_features_key}); set MODEL.FPN.IN_FEATURES to a non-empty subset "
            f"of {out_features_key} (missing: {missing})."
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
def build_mobilenetv2_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """MobileNetV2 (``MODEL.MOBILENETV2``) + FPN + p6 max-pool."""
    return fpn_over(build_mobilenetv2_backbone(cfg, input_shape), cfg,
                     "MODEL.MOBILENETV2.OUT_FEATURES")
