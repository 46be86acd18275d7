from ...errors import ConfigError

"""Config check for detectron2's own BasicBlock ResNet-18/34.

detectron2's ``build_resnet_backbone`` already builds ResNet-18/34 out of ``BasicBlock`` when the
config asks for it, but its defaults are those of ResNet-50 (``RES2_OUT_CHANNELS: 256``) and a
wrong key ends in a bare assertion.  :func:`check_resnet_basic_config` names every key that has to
change; the run's checks call it before any model is built whenever MODEL.RESNETS.DEPTH is 18 or
34, so a wrong key is one readable error instead of an assertion inside detectron2.
Keys a ResNet-18/34 config needs::

    MODEL.RESNETS.DEPTH: 18            # or 34
    MODEL.RESNETS.RES2_OUT_CHANNELS: 64
    MODEL.RESNETS.OUT_FEATURES: ["res2", "res3", "res4", "res5"]
"""

__all__ = ["RESNET_BASIC_DEPTHS", "check_resnet_basic_config"]

RESNET_BASIC_DEPTHS = (18, 34)


def check_resnet_basic_config(cfg) -> None:
    """Raise one ConfigError (a ValueError) naming every ``MODEL.RESNETS`` key that does not fit
    a BasicBlock ResNet-18/34, each with its fix."""
    resnets = cfg.MODEL.RESNETS
    checks = [  # (the key does not fit, its problem and fix)
        (
            resnets.DEPTH not in RESNET_BASIC_DEPTHS,
            f"MODEL.RESNETS.DEPTH is {resnets.DEPTH!r}; set 18 or 34 (for deeper ResNets use "
            "detectron2's build_resnet_fpn_backbone).",
        ),
        (
            resnets.RES2_OUT_CHANNELS != 64,
            f"MODEL.RESNETS.RES2_OUT_CHANNELS is {resnets.RES2_OUT_CHANNELS!r}; set 64 "
            "(BasicBlock ResNets have 64 channels in res2; 256 is the ResNet-50 default).",
        ),
        (
            any(resnets.DEFORM_ON_PER_STAGE),
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE is {list(resnets.DEFORM_ON_PER_STAGE)!r}; set "
            "[False, False, False, False] (no deformable BasicBlock exists).",
        ),
        (
            resnets.RES5_DILATION != 1,
            f"MODEL.RESNETS.RES5_DILATION is {resnets.RES5_DILATION!r}; set 1 (dilated res5 "
            "exists only for bottleneck ResNets).",
        ),
        (
            resnets.NUM_GROUPS != 1,
            f"MODEL.RESNETS.NUM_GROUPS is {resnets.NUM_GROUPS!r}; set 1 (BasicBlock has no "
            "grouped convolutions).",
        ),
    ]
    problems = [problem for bad, problem in checks if bad]
    if problems:
        raise ConfigError(
            "Bad ResNet-18/34 (BasicBlock) backbone config:\n  " + "\n  ".join(problems)
        )
