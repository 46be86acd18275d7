"""MobileNetV1 for ImageNet (Howard et al., 2017), width 1.0: a stride-2 3x3 stem and 13
depthwise-separable blocks; 224x224 inputs end at 7x7.  ReviewKD taps the maps at strides 4, 8,
16 and 32 (128, 256, 512 and 1024 channels), the outputs of the reference's ``model[3]``,
``[5]``, ``[11]`` and ``[13]``, its stem being ``model[0]``
(ImageNet/ReviewKD++/models/mobilenet.py).  Embedding: 1024.  Pre-activation features: those
blocks' last BatchNorm output before its ReLU (the reference's ``preReLU`` maps)."""

import torch.nn.functional as F
from torch import nn

from .base import Classifier, conv_bn, init_conv_bn
from .registry import register_classifier

__all__ = ["MobileNetV1"]

# (output channels, stride) of the depthwise-separable blocks
_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
_TAPPED_BLOCKS = (2, 4, 10, 12)


def _separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 depthwise + BN + ReLU, 1x1 + BN + ReLU, as one flat Sequential (keys 0..5)."""
    return nn.Sequential(
        *conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
        *conv_bn(in_channels, out_channels, 1),
    )


@register_classifier("mobilenet_v1", "imagenet", "MobileNetV1 1.0 for ImageNet")
class MobileNetV1(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = conv_bn(in_channels, 32, 3, 2)
        self.blocks = nn.ModuleList(
            _separable(c_in, c_out, stride)
            for c_in, (c_out, stride) in zip([32] + [c for c, _ in _BLOCKS], _BLOCKS)
        )
        init_conv_bn(self)
        self._init_head([_BLOCKS[i][0] for i in _TAPPED_BLOCKS], _BLOCKS[-1][0], num_classes)

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
