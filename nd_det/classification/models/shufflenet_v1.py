"""ShuffleNetV1 for CIFAR (Zhang et al., 2018), 3 groups, stage widths 240/480/960, 4/8/4 units.

The variant of the KD literature and of the reference code (CIFAR/Models/shufflenetv1.py): a 1x1
stem to 24 channels at full resolution, then three stages that each start with a stride-2 unit,
so 32x32 inputs give 16, 8 and 4 pixels.  As in the reference (not in the paper's unit), the
depthwise convolution is followed by a ReLU.  Embedding: 960.  Pre-activation features: each
stage's last unit output before its final ReLU (the reference's ``preact``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, conv_bn, init_conv_bn, make_stage
from .preact import ReluOutputBlock
from .registry import register_classifier

__all__ = ["ShuffleNetV1"]

STEM_CHANNELS = 24


class ShuffleUnit(ReluOutputBlock):
    """1x1 group conv -> shuffle -> 3x3 depthwise (+ ReLU) -> 1x1 group conv, with an added
    (stride 1) or concatenated average-pooled (stride 2) shortcut, then a ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        mid = branch_out // 4
        # the first unit sees the 24-channel stem, which is not split into groups
        self.first_groups = 1 if in_channels == STEM_CHANNELS else groups
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)

    def preact(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], dim=1)
        return out + x


@register_classifier("shufflenet_v1", "cifar", "ShuffleNetV1 (g=3) for CIFAR")
class ShuffleNetV1(Classifier):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths=(240, 480, 960),
        units=(4, 8, 4),
        groups: int = 3,
    ):
        super().__init__()
        self.stem = conv_bn(in_channels, STEM_CHANNELS, 1)
        self.stages = nn.ModuleList(
            make_stage(ShuffleUnit, c_in, c_out, count, 2, groups=groups)
            for c_in, c_out, count in zip((STEM_CHANNELS,) + tuple(widths[:-1]), widths, units)
        )
        init_conv_bn(self)
        self._init_head(widths, widths[-1], num_classes)
