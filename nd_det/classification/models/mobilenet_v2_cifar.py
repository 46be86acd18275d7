"""MobileNetV2 for CIFAR as used in the KD literature (Sandler et al., 2018): width 0.5, expansion 6.

A 3x3 stride-2 stem, the seven inverted-residual groups of the paper with strides 1, 1, 2, 2, 1,
2, 1, then a 1x1 conv to 1280 channels; 32x32 inputs end at 2x2.  ReviewKD taps the outputs of
groups 2, 3, 5 and 7 (12, 16, 48 and 160 channels), as the reference does
(CIFAR/ReviewKD++/models/mobilenetv2_cifar.py, ``f1``..``f4``).  Embedding: 1280.  The groups end
with a linear bottleneck (no activation), so the pre-activation features are the same maps.
"""
from torch import nn

from .base import Classifier, init_conv_bn
from .registry import register_classifier

__all__ = ["MobileNetV2Cifar"]

# expansion t, output channels c (before width scaling), repeats n, first stride s
_GROUPS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))
_TAPPED_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x):
        out = self.body(x)
        return x + out if self.use_residual else out


class MobileNetV2Cifar(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 0.5,
                 last_channels: int = 1280):
        super().__init__()
        channels = int(32 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        groups = []
        tapped_channels = []
        for index, (t, c, n, s) in enumerate(_GROUPS):
            out_channels = int(c * width)
            units = []
            for i in range(n):
                units.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
            groups.append(nn.Sequential(*units))
            if index in _TAPPED_GROUPS:
                tapped_channels.append(channels)
        self.groups = nn.ModuleList(groups)
        self.last = nn.Sequential(
            nn.Conv2d(channels, last_channels, 1, bias=False),
            nn.BatchNorm2d(last_channels),
            nn.ReLU(inplace=True),
        )
        init_conv_bn(self)
        self._init_head(tapped_channels, last_channels, num_classes)

    def forward_features(self, x):
        x = self.stem(x)
        feats = []
        for index, group in enumerate(self.groups):
            x = group(x)
            if index in _TAPPED_GROUPS:
                feats.append(x)
        return feats, feats, self.last(x)


@register_classifier("mobilenet_v2_cifar", "cifar", "MobileNetV2 x0.5 for CIFAR")
def build_mobilenet_v2_cifar(num_classes: int, in_channels: int = 3) -> MobileNetV2Cifar:
    return MobileNetV2Cifar(num_classes, in_channels)
