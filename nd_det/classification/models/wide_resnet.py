"""Wide ResNets for CIFAR (Zagoruyko & Komodakis, 2016): WRN-depth-k, pre-activation blocks.

Three stages of widths 16k/32k/64k at strides 1, 2, 2, (depth - 4) / 6 blocks each, a final
BatchNorm + ReLU before pooling.  Embedding: 64k (WRN-40-1: 64, WRN-40-2: 128).

The blocks end without an activation, so the stage features are the raw stage outputs.  The
pre-activation features are those outputs after the BatchNorm that comes next (the first BN of
the next stage's first block, and the final BN after the last stage), before its ReLU: the
reference's ``preact`` maps (CIFAR/ReviewKD++/models/wrn_cifar.py).  That BN is computed once
and reused by the block it belongs to.
"""

from functools import partial

import torch.nn.functional as F
from torch import nn

from .base import Classifier, init_conv_bn, make_stage
from .registry import register_classifier

__all__ = ["WideResNet"]


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x, normalised=None):
        """``normalised``: ``self.bn1(x)`` when the caller has computed it already."""
        if normalised is None:
            normalised = self.bn1(x)
        pre = self.relu(normalised)  # not in place: the caller may keep ``normalised``
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        shortcut = x if self.projection is None else self.projection(pre)
        return out + shortcut


class WideResNet(Classifier):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1; got {depth}")
        blocks = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.stages = nn.ModuleList(
            make_stage(PreActBlock, c_in, c_out, blocks, stride)
            for c_in, c_out, stride in zip([16] + widths[:-1], widths, (1, 2, 2))
        )
        # the final BN (its ReLU is applied in forward_features); a Sequential for the key names
        # final.0.* of existing checkpoints
        self.final = nn.Sequential(nn.BatchNorm2d(widths[-1]))
        init_conv_bn(self)
        self._init_head(widths, widths[-1], num_classes)

    def forward_features(self, x):
        x = self.stem(x)
        feats, preacts = [], []
        normalised = None  # the first block normalises the stem output itself
        for index, stage in enumerate(self.stages):
            x = stage[0](x, normalised)
            for block in stage[1:]:
                x = block(x)
            feats.append(x)
            following = (
                self.stages[index + 1][0].bn1 if index + 1 < len(self.stages) else self.final[0]
            )
            normalised = following(x)
            preacts.append(normalised)
        return feats, preacts, F.relu(normalised)  # not in place: ``normalised`` is a feature


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register_classifier(f"wrn_{_depth}_{_widen}", "cifar", f"Wide ResNet-{_depth}-{_widen}")(
        partial(WideResNet, _depth, _widen)
    )
