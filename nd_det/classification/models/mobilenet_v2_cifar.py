"""MobileNetV2 for CIFAR as used in the KD literature (Sandler et al., 2018): width 0.5,
expansion 6.

A 3x3 stride-2 stem, the seven inverted-residual groups of the paper with strides 1, 1, 2, 2, 1,
2, 1, then a 1x1 conv to 1280 channels; 32x32 inputs end at 2x2.  ReviewKD taps the outputs of
groups 2, 3, 5 and 7 (12, 16, 48 and 160 channels), as the reference does
(CIFAR/ReviewKD++/models/mobilenetv2_cifar.py, ``f1``..``f4``).  Embedding: 1280.  The groups end
with a linear bottleneck (no activation), so the pre-activation features are the same maps.
"""

from torch import nn

from .base import Classifier, conv_bn, init_conv_bn, make_stage
from .registry import register_classifier

__all__ = ["MobileNetV2Cifar"]

# expansion t, output channels c (before width scaling), repeats n, first stride s
_GROUPS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_TAPPED_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.body = nn.Sequential(  # flat (keys body.0..7), the last BN without a ReLU
            *conv_bn(in_channels, hidden, 1),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden),
            *conv_bn(hidden, out_channels, 1, relu=False),
        )

    def forward(self, x):
        out = self.body(x)
        return x + out if self.use_residual else out


@register_classifier("mobilenet_v2_cifar", "cifar", "MobileNetV2 x0.5 for CIFAR")
class MobileNetV2Cifar(Classifier):
    def __init__(
        self, num_classes: int, in_channels: int = 3, width: float = 0.5, last_channels: int = 1280
    ):
        super().__init__()
        channels = int(32 * width)
        self.stem = conv_bn(in_channels, channels, 3, 2)
        groups = []
        for t, c, n, s in _GROUPS:
            groups.append(make_stage(InvertedResidual, channels, int(c * width), n, s, expansion=t))
            channels = int(c * width)
        self.groups = nn.ModuleList(groups)
        self.last = conv_bn(channels, last_channels, 1)
        tapped_channels = [int(_GROUPS[i][1] * width) for i in _TAPPED_GROUPS]
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
