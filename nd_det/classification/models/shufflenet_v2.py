"""ShuffleNetV2 1.0x for CIFAR (Ma et al., 2018): stage widths 116/232/464, a 1x1 conv to 1024.

A 1x1 stem to 24 channels (as the reference code, CIFAR/Models/shufflenetv2.py), then three
stages each opened by a stride-2 unit and followed by 3, 7 and 3 split units; 32x32 inputs give
16, 8 and 4 pixels.  Embedding: 1024.  Pre-activation features: each stage's last split unit
with its branch taken before the branch's final ReLU, concatenated with the untouched half and
NOT channel-shuffled, exactly the reference's ``preact`` (CIFAR/ReviewKD++/models/shufflenetv2.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier, conv_bn, init_conv_bn
from .registry import register_classifier

__all__ = ["ShuffleNetV2"]


class SplitUnit(nn.Module):
    """Stride 1: half the channels pass through, the other half go through the branch (whose
    final ReLU is applied in ``forward_with_preact``)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv_bn(half, half, 1),
            conv_bn(half, half, 3, groups=half, relu=False),
            conv_bn(half, half, 1, relu=False),
        )

    def _halves(self, x):
        keep, work = x.chunk(2, dim=1)
        return keep, self.branch(work)

    def forward(self, x):
        keep, branch = self._halves(x)
        return F.channel_shuffle(torch.cat([keep, F.relu(branch, inplace=True)], dim=1), 2)

    def forward_with_preact(self, x):
        keep, branch = self._halves(x)
        out = F.channel_shuffle(torch.cat([keep, F.relu(branch)], dim=1), 2)
        return out, torch.cat([keep, branch], dim=1)


class DownUnit(nn.Module):
    """Stride 2: both halves of the output come from the whole input through two branches."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.left = nn.Sequential(
            conv_bn(in_channels, in_channels, 3, 2, groups=in_channels, relu=False),
            conv_bn(in_channels, half, 1),
        )
        self.right = nn.Sequential(
            conv_bn(in_channels, half, 1),
            conv_bn(half, half, 3, 2, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x):
        return F.channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1), 2)


@register_classifier("shufflenet_v2", "cifar", "ShuffleNetV2 1.0x for CIFAR")
class ShuffleNetV2(Classifier):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths=(116, 232, 464),
        units=(3, 7, 3),
        last_channels: int = 1024,
    ):
        super().__init__()
        self.stem = conv_bn(in_channels, 24, 1)
        self.stages = nn.ModuleList(
            nn.Sequential(DownUnit(c_in, c_out), *[SplitUnit(c_out) for _ in range(count)])
            for c_in, c_out, count in zip((24,) + tuple(widths[:-1]), widths, units)
        )
        self.last = conv_bn(widths[-1], last_channels, 1)
        init_conv_bn(self)
        self._init_head(widths, last_channels, num_classes)

    def head_input(self, x):
        return self.last(x)
