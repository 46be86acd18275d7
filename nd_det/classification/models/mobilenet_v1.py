"""MobileNetV1 for ImageNet (Howard et al., 2017), width 1.0: a stride-2 3x3 stem and 13
depthwise-separable blocks; 224x224 inputs end at 7x7.  ReviewKD taps the maps at strides 4, 8,
16 and 32 (128, 256, 512 and 1024 channels), the outputs of the reference's ``model[3]``,
``[5]``, ``[11]`` and ``[13]``, its stem being ``model[0]``
(ImageNet/ReviewKD++/models/mobilenet.py).  Embedding: 1024.  Pre-activation features: those
blocks' last BatchNorm output before its ReLU (the reference's ``preReLU`` maps)."""
import torch.nn.functional as F
from torch import nn

from .base import Classifier, init_conv_bn
from .registry import register_classifier

__all__ = ["MobileNetV1"]

# (output channels, stride) of the depthwise-separable blocks
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
           (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
_TAPPED_BLOCKS = (2, 4, 10, 12)


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        channels = 32
        blocks = []
        for out_channels, stride in _BLOCKS:
            blocks.append(_separable(channels, out_channels, stride))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        init_conv_bn(self)
        self._init_head([_BLOCKS[i][0] for i in _TAPPED_BLOCKS], channels, num_classes)

    def forward_features(self, x):
        x = self.stem(x)
        feats, preacts = [], []
        for index, block in enumerate(self.blocks):
            if index in _TAPPED_BLOCKS:
                pre = block[:-1](x)  # everything but the final ReLU
                x = F.relu(pre)
                preacts.append(pre)
                feats.append(x)
            else:
                x = block(x)
        return feats, preacts, x


@register_classifier("mobilenet_v1", "imagenet", "MobileNetV1 1.0 for ImageNet")
def build_mobilenet_v1(num_classes: int, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels)
