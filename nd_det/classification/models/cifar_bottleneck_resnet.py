"""ResNet-50 for CIFAR: ImageNet's bottleneck layout (3, 4, 6, 3) with a 3x3 stride-1 stem and no
max-pool, so 32x32 inputs give stages of 32, 16, 8 and 4 pixels.  Embedding: 2048.
Pre-activation features: each stage's last block output before its final ReLU (the reference's
``f1_pre``..``f4_pre``, CIFAR/ReviewKD++/models/resnetv2_cifar.py)."""
from torch import nn

from .base import Classifier, init_conv_bn, residual_shortcut
from .preact import ReluOutputBlock
from .registry import register_classifier

__all__ = ["CifarBottleneckResNet"]

EXPANSION = 4


class Bottleneck(ReluOutputBlock):
    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = width * EXPANSION
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
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        channels = 64
        stages = []
        stage_channels = []
        for width, blocks, stride in zip((64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2)):
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(channels, width, stride if i == 0 else 1))
                channels = width * EXPANSION
            stages.append(nn.Sequential(*layers))
            stage_channels.append(channels)
        self.stages = nn.ModuleList(stages)
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each residual branch starts as the identity
        self._init_head(stage_channels, channels, num_classes)


@register_classifier("resnet50_cifar", "cifar", "ResNet-50 (bottleneck) with a CIFAR stem")
def build_resnet50_cifar(num_classes: int, in_channels: int = 3) -> CifarBottleneckResNet:
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes, in_channels)
