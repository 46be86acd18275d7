"""CIFAR ResNets (He et al., 2016, section 4.2) in the widths used by the KD literature.

Three stages of BasicBlocks at strides 1, 2, 2 after a 3x3 stem (no max-pool):
``resnet{depth}`` has widths 16/16/32/64 and ``resnet{depth}x4`` 32/64/128/256, with
(depth - 2) / 6 blocks per stage.  Embedding: the last stage's width (64, or 256 for x4).
Pre-activation features: each stage's last block output before its final ReLU (the reference's
``f1_pre``..``f3_pre``, CIFAR/ReviewKD++/models/resnet_cifar.py).
"""

from collections.abc import Sequence
from functools import partial

from torch import nn

from .base import Classifier, conv_bn, init_conv_bn, make_stage, residual_shortcut
from .preact import ReluOutputBlock
from .registry import register_classifier

__all__ = ["CifarResNet"]


class BasicBlock(ReluOutputBlock):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = residual_shortcut(in_channels, out_channels, stride)

    def preact(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + self.shortcut(x)


class CifarResNet(Classifier):
    """Stem width ``widths[0]``, then three stages of widths ``widths[1:]``."""

    def __init__(self, depth: int, widths: Sequence[int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1; got {depth}")
        blocks = (depth - 2) // 6
        self.stem = conv_bn(in_channels, widths[0], 3)
        self.stages = nn.ModuleList(
            make_stage(BasicBlock, c_in, c_out, blocks, stride)
            for c_in, c_out, stride in zip(widths[:-1], widths[1:], (1, 2, 2))
        )
        init_conv_bn(self)
        self._init_head(widths[1:], widths[-1], num_classes)


def _register(depth: int, widths: Sequence[int], suffix: str = "") -> None:
    description = f"CIFAR ResNet-{depth}, stage widths {list(widths[1:])}"
    register_classifier(f"resnet{depth}{suffix}", "cifar", description)(
        partial(CifarResNet, depth, widths)
    )


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(_depth, (16, 16, 32, 64))
for _depth in (8, 32):
    _register(_depth, (32, 64, 128, 256), "x4")
