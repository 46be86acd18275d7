"""torchvision's ImageNet ResNets (18/34/50/101/152) as Classifiers.

The torchvision modules are kept under their own attribute names (conv1, bn1, layer1..4, fc), so
a torchvision state dict (e.g. ``resnet34-b627a593.pth``) loads with every key matched.
ReviewKD taps layer1..layer4.  Embedding: 512 (18/34) or 2048 (50/101/152).  Pre-activation
features: each layer's last block output before its final ReLU, the maps the reference's
ImageNet ResNet was written to return (ImageNet/ReviewKD++/models/resnet.py, ``is_last``).
"""

from functools import partial

import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from .base import Classifier
from .registry import register_classifier

__all__ = ["TorchvisionResNet"]


class TorchvisionResNet(Classifier):
    def __init__(self, arch: str, num_classes: int, in_channels: int = 3):
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        stage_channels = [self._out_channels(layer) for layer in self._layers()]
        self._init_head(stage_channels, net.fc.in_features, num_classes)
        self.fc = net.fc  # keep torchvision's initialisation and key names

    def _layers(self):
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    @staticmethod
    def _out_channels(layer: nn.Sequential) -> int:
        last = layer[-1]
        bn = getattr(last, "bn3", None) or last.bn2
        return bn.num_features

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats, preacts = [], []
        for layer in self._layers():
            for block in layer[:-1]:
                x = block(x)
            x, pre = _block_with_preact(layer[-1], x)
            feats.append(x)
            preacts.append(pre)
        return feats, preacts, x


def _block_with_preact(block: nn.Module, x):
    """torchvision's BasicBlock / Bottleneck forward, also returning the sum before its final
    ReLU (the same layers in the same order, so the output equals ``block(x)``)."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    pre = out + identity
    return F.relu(pre), pre


for _depth in (18, 34, 50, 101, 152):
    register_classifier(f"resnet{_depth}", "imagenet", f"torchvision ResNet-{_depth}")(
        partial(TorchvisionResNet, f"resnet{_depth}")
    )
