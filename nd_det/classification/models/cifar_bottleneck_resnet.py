"""ResNet-50 for CIFAR: ImageNet's bottleneck layout (3, 4, 6, 3) with a 3x3 stride-1 stem and no
max-pool, so 32x32 inputs give stages of 32, 16, 8 and 4 pixels.  Embedding: 2048.
Pre-activation features: each stage's last block output before its final ReLU (the reference's
``f1_pre``..``f4_pre``, CIFAR/ReviewKD++/models/resnetv2_cifar.py)."""

from functools import partial

from torch import nn

from .base import Classifier, conv_bn, init_conv_bn, make_stage, residual_shortcut
from .preact import ReluOutputBlock
from .registry import register_classifier

__all__ = ["CifarBottleneckResNet"]

EXPANSION = 4


class Bottleneck(ReluOutputBlock):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        width = out_channels // EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = residual_shortcut(in_channels, out_channels, stride)

    def preact(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x)


class CifarBottleneckResNet(Classifier):
    def __init__(self, blocks_per_stage, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = conv_bn(in_channels, 64, 3)
        widths = [width * EXPANSION for width in (64, 128, 256, 512)]
        self.stages = nn.ModuleList(
            make_stage(Bottleneck, c_in, c_out, blocks, stride)
            for c_in, c_out, blocks, stride in zip(
                [64] + widths[:-1], widths, blocks_per_stage, (1, 2, 2, 2)
            )
        )
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each residual branch starts as the identity
        self._init_head(widths, widths[-1], num_classes)


register_classifier("resnet50_cifar", "cifar", "ResNet-50 (bottleneck) with a CIFAR stem")(
    partial(CifarBottleneckResNet, (3, 4, 6, 3))
)
