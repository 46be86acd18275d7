"""MobileNetV2 (Sandler et al., 2018) as a detectron2 bottom-up backbone.

The layer layout is torchvision's ``mobilenet_v2`` (inverted residual blocks, ReLU6, no bias in the
convolutions), cut into detectron2-style stages so that FPN can sit on top::

    stem  torchvision features[0]       3x3 conv, stride 2                   32 channels
    m2    features[1:4]                 stride 4                             24 channels
    m3    features[4:7]                 stride 8                             32 channels
    m4    features[7:14]                stride 16                            96 channels
    m5    features[14:18]               stride 32                           320 channels

(channels at width multiplier 1.0).  torchvision's last 1x1 conv to 1280 channels
(``features[18]``) and the classifier are not part of the backbone.  Converted ImageNet weights
from torchvision load into it (:mod:`nd_det.modeling.weight_conversion`); the outputs then equal
torchvision's ``features`` at the stage boundaries.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone

__all__ = [
    "MOBILENETV2_STAGES",
    "MOBILENETV2_NORMS",
    "InvertedResidual",
    "MobileNetV2Stem",
    "MobileNetV2",
    "make_divisible",
    "mobilenet_v2_block_layout",
    "check_mobilenetv2_config",
    "build_mobilenetv2_backbone",
]

# Per stage, torchvision's inverted-residual settings (expand ratio t, output channels c at width
# 1.0, number of blocks n, stride of the first block s), in network order.
MOBILENETV2_STAGES: Tuple[Tuple[str, Tuple[Tuple[int, int, int, int], ...]], ...] = (
    ("m2", ((1, 16, 1, 1), (6, 24, 2, 2))),
    ("m3", ((6, 32, 3, 2),)),
    ("m4", ((6, 64, 4, 2), (6, 96, 3, 1))),
    ("m5", ((6, 160, 3, 2), (6, 320, 1, 1))),
)
_STEM_CHANNELS = 32
_FEATURE_NAMES = ("stem",) + tuple(name for name, _ in MOBILENETV2_STAGES)
MOBILENETV2_NORMS = ("FrozenBN", "BN", "SyncBN", "GN")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (never below ``divisor`` and
    never more than 10% down), as torchvision's MobileNetV2 does for its width multiplier."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def mobilenet_v2_block_layout() -> List[Tuple[str, int, bool]]:
    """For torchvision's ``features[1]`` .. ``features[17]`` in order: (stage name, index of the
    block inside the stage, whether the block has a 1x1 expansion conv)."""
    layout = []
    for stage_name, settings in MOBILENETV2_STAGES:
        index = 0
        for expand_ratio, _, num_blocks, _ in settings:
            for _ in range(num_blocks):
                layout.append((stage_name, index, expand_ratio != 1))
                index += 1
    return layout


def _norm_layer(norm: str, channels: int) -> nn.Module:
    # detectron2's "GN" is GroupNorm(32, C), which MobileNetV2's 16- and 24-channel layers cannot
    # use; take the largest group count <= 32 that divides C instead.
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return get_norm(norm, channels)


def _check_norm(norm: str) -> None:
    if norm not in MOBILENETV2_NORMS:
        raise ValueError(
            f"MobileNetV2 norm {norm!r} is not supported; use one of {list(MOBILENETV2_NORMS)}."
        )


class InvertedResidual(CNNBlockBase):
    """torchvision's inverted residual: optional 1x1 expansion + ReLU6, 3x3 depthwise + ReLU6,
    1x1 linear projection, identity shortcut when the stride is 1 and the channels do not
    change."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expand_ratio: int,
                 norm: str = "FrozenBN"):
        super().__init__(in_channels, out_channels, stride)
        _check_norm(norm)
        hidden_channels = int(round(in_channels * expand_ratio))
        if expand_ratio != 1:
            self.expand = Conv2d(in_channels, hidden_channels, kernel_size=1, bias=False,
                                 norm=_norm_layer(norm, hidden_channels))
        else:
            self.expand = None
        self.depthwise = Conv2d(hidden_channels, hidden_channels, kernel_size=3, stride=stride,
                                padding=1, groups=hidden_channels, bias=False,
                                norm=_norm_layer(norm, hidden_channels))
        self.project = Conv2d(hidden_channels, out_channels, kernel_size=1, bias=False,
                              norm=_norm_layer(norm, out_channels))
        self.use_residual = stride == 1 and in_channels == out_channels
        for conv in (self.expand, self.depthwise, self.project):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand is not None:
            out = F.relu6(self.expand(out))
        out = F.relu6(self.depthwise(out))
        out = self.project(out)
        if self.use_residual:
            out = out + x
        return out


class MobileNetV2Stem(CNNBlockBase):
    """The first 3x3 stride-2 conv + norm + ReLU6 (torchvision ``features[0]``)."""

    def __init__(self, in_channels: int = 3, out_channels: int = _STEM_CHANNELS,
                 norm: str = "FrozenBN"):
        super().__init__(in_channels, out_channels, 2)
        _check_norm(norm)
        self.conv = Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1,
                           bias=False, norm=_norm_layer(norm, out_channels))
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.conv(x))


class MobileNetV2(Backbone):
    """MobileNetV2 bottom-up network returning a dict of the requested stage outputs.

    Args:
        in_channels: input image channels.
        width_mult: torchvision's channel width multiplier (ImageNet weights exist for 1.0).
        norm: one of ``MOBILENETV2_NORMS``.
        out_features: names among "stem", "m2", "m3", "m4", "m5"; stages deeper than the last
            requested one are not built.
        freeze_at: 0 trains everything; 1 freezes the stem; k >= 2 also freezes m2..m<k>.
    """

    def __init__(self, *, in_channels: int = 3, width_mult: float = 1.0, norm: str = "FrozenBN",
                 out_features: Sequence[str] = ("m2", "m3", "m4", "m5"), freeze_at: int = 0):
        super().__init__()
        _check_norm(norm)
        if not width_mult > 0:
            raise ValueError(f"MobileNetV2 width_mult must be > 0, got {width_mult!r}.")
        out_features = list(out_features)
        unknown = [name for name in out_features if name not in _FEATURE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"MobileNetV2 out_features {out_features!r} must be a non-empty list of names "
                f"among {list(_FEATURE_NAMES)}; unknown: {unknown}."
            )
        if not 0 <= freeze_at <= len(_FEATURE_NAMES):
            raise ValueError(
                f"MobileNetV2 freeze_at must be in 0..{len(_FEATURE_NAMES)}, got {freeze_at!r}."
            )
        self._out_features = out_features
        deepest = max(_FEATURE_NAMES.index(name) for name in out_features)

        stem_channels = make_divisible(_STEM_CHANNELS * width_mult)
        self.stem = MobileNetV2Stem(in_channels, stem_channels, norm)
        self._out_feature_strides = {"stem": 2}
        self._out_feature_channels = {"stem": stem_channels}

        self.stage_names: List[str] = []
        channels, stride = stem_channels, 2
        for stage_name, settings in MOBILENETV2_STAGES[:deepest]:
            blocks = []
            for expand_ratio, base_channels, num_blocks, first_stride in settings:
                out_channels = make_divisible(base_channels * width_mult)
                for block_index in range(num_blocks):
                    block_stride = first_stride if block_index == 0 else 1
                    blocks.append(InvertedResidual(channels, out_channels, stride=block_stride,
                                                   expand_ratio=expand_ratio, norm=norm))
                    channels = out_channels
                    stride *= block_stride
            self.add_module(stage_name, nn.Sequential(*blocks))
            self.stage_names.append(stage_name)
            self._out_feature_strides[stage_name] = stride
            self._out_feature_channels[stage_name] = channels

        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> "MobileNetV2":
        """Freeze the stem (freeze_at >= 1) and stages m2..m<freeze_at>, turning their BN into
        FrozenBN, like detectron2's ``ResNet.freeze``."""
        if freeze_at >= 1:
            self.stem.freeze()
        for stage_number, stage_name in enumerate(self.stage_names, start=2):
            if freeze_at >= stage_number:
                for block in getattr(self, stage_name).children():
                    block.freeze()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"MobileNetV2 takes (N, C, H, W) inputs, got shape {tuple(x.shape)}.")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for stage_name in self.stage_names:
            x = getattr(self, stage_name)(x)
            if stage_name in self._out_features:
                outputs[stage_name] = x
        return outputs


def check_mobilenetv2_config(cfg) -> None:
    """Raise one ValueError naming every bad ``MODEL.MOBILENETV2`` key and its fix."""
    if "MOBILENETV2" not in cfg.MODEL:
        raise ValueError(
            "The config has no MODEL.MOBILENETV2 node; call "
            "nd_det.modeling.backbone.add_backbone_config(cfg) (or nd_det.add_distill_config) "
            "before merging a config file that uses a MobileNetV2 backbone."
        )
    mv2 = cfg.MODEL.MOBILENETV2
    problems = []
    if mv2.NORM not in MOBILENETV2_NORMS:
        problems.append(f"MODEL.MOBILENETV2.NORM is {mv2.NORM!r}; set one of "
                        f"{list(MOBILENETV2_NORMS)}.")
    unknown = [name for name in mv2.OUT_FEATURES if name not in _FEATURE_NAMES]
    if unknown or not mv2.OUT_FEATURES:
        problems.append(f"MODEL.MOBILENETV2.OUT_FEATURES is {list(mv2.OUT_FEATURES)!r}; use names "
                        f"among {list(_FEATURE_NAMES)} (e.g. ['m2', 'm3', 'm4', 'm5']).")
    if not (isinstance(mv2.FREEZE_AT, int) and 0 <= mv2.FREEZE_AT <= len(_FEATURE_NAMES)):
        problems.append(f"MODEL.MOBILENETV2.FREEZE_AT is {mv2.FREEZE_AT!r}; set an integer in "
                        f"0..{len(_FEATURE_NAMES)}.")
    if not (isinstance(mv2.WIDTH_MULT, (int, float)) and mv2.WIDTH_MULT > 0):
        problems.append(f"MODEL.MOBILENETV2.WIDTH_MULT is {mv2.WIDTH_MULT!r}; set a positive "
                        "number (1.0 for ImageNet weights).")
    if problems:
        raise ValueError("Bad MobileNetV2 backbone config:\n  " + "\n  ".join(problems))


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_backbone(cfg, input_shape: ShapeSpec) -> MobileNetV2:
    """The bottom-up MobileNetV2 from ``cfg.MODEL.MOBILENETV2``."""
    check_mobilenetv2_config(cfg)
    mv2 = cfg.MODEL.MOBILENETV2
    return MobileNetV2(
        in_channels=input_shape.channels,
        width_mult=float(mv2.WIDTH_MULT),
        norm=mv2.NORM,
        out_features=mv2.OUT_FEATURES,
        freeze_at=mv2.FREEZE_AT,
    )
