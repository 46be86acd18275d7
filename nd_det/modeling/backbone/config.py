"""Config keys of the student backbones that detectron2 lacks.

``add_backbone_config(cfg)`` adds the ``MODEL.MOBILENETV2`` node.  The ResNet-18/34 FPN backbone
needs no new key: it reads detectron2's own ``MODEL.RESNETS`` keys (``DEPTH: 18`` or ``34`` and
``RES2_OUT_CHANNELS: 64``; see :mod:`nd_det.modeling.backbone.resnet_basic`).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_backbone_config"]


def add_backbone_config(cfg):
    """Add the ``MODEL.MOBILENETV2`` keys (with working defaults) to a detectron2 config, in place.

    Safe to call more than once: an existing node is left as it is.
    """
    if "MOBILENETV2" in cfg.MODEL:
        return cfg
    cfg.MODEL.MOBILENETV2 = CN()
    # Stages returned by the bottom-up network: any of "stem" (stride 2, 32 channels),
    # "m2" (stride 4, 24), "m3" (stride 8, 32), "m4" (stride 16, 96), "m5" (stride 32, 320)
    # (channels at WIDTH_MULT 1.0).  MODEL.FPN.IN_FEATURES must be a subset of these.
    cfg.MODEL.MOBILENETV2.OUT_FEATURES = ["m2", "m3", "m4", "m5"]
    # Normalisation after every convolution: "FrozenBN" (fixed ImageNet statistics, the usual
    # choice with converted torchvision weights), "BN", "SyncBN" (multi-GPU BN) or "GN"
    # (GroupNorm with the largest group count <= 32 that divides the channels; trains sanely from
    # random init).
    cfg.MODEL.MOBILENETV2.NORM = "FrozenBN"
    # Like MODEL.BACKBONE.FREEZE_AT for ResNet: 0 trains everything, 1 freezes the stem,
    # k in 2..5 freezes the stem and stages m2..m<k> (weights fixed, BN turned into FrozenBN).
    cfg.MODEL.MOBILENETV2.FREEZE_AT = 2
    # Channel width multiplier of torchvision's MobileNetV2 (channels rounded to multiples of 8).
    # The ImageNet weights (and the converter) exist for 1.0 only.
    cfg.MODEL.MOBILENETV2.WIDTH_MULT = 1.0
    return cfg
