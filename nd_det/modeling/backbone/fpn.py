"""``fpn_over``: detectron2's FPN (``MODEL.FPN``) over any bottom-up network, as
``build_torchvision_fpn_backbone`` puts it over a torchvision classifier.

(ResNet-18/34 students need no builder of nd-det's: detectron2's ``build_resnet_fpn_backbone``
builds them with ``MODEL.RESNETS.DEPTH 18/34`` and ``RES2_OUT_CHANNELS 64``.)

One more level comes from max-pooling the deepest FPN level (``LastLevelMaxPool``), so with
``MODEL.FPN.IN_FEATURES`` at all four stages it returns p2..p6 at strides 4..64 with
``MODEL.FPN.OUT_CHANNELS`` channels, exactly like detectron2's ``build_resnet_fpn_backbone``;
with fewer stages (e.g. c2..c4) the extra level follows the deepest one (p2..p5).
"""
import math

from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

__all__ = ["fpn_over"]


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
