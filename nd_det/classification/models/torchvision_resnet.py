"""torchvision's ImageNet ResNets (18/34/50/101/152) as Classifiers.

The torchvision modules are kept under their own attribute names (conv1, bn1, layer1..4, fc), so
a torchvision state dict (e.g. ``resnet34-b627a593.pth``) loads with every key matched.
ReviewKD taps layer1..layer4.  Embedding: 512 (18/34) or 2048 (50/101/152).
"""
import torchvision
from torch import nn

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
            net.layer1, net.layer2, net.layer3, net.layer4)
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
        feats = []
        for layer in self._layers():
            x = layer(x)
            feats.append(x)
        return feats, x


def _register(depth: int):
    arch = f"resnet{depth}"

    @register_classifier(arch, "imagenet", f"torchvision ResNet-{depth}")
    def build(num_classes: int, in_channels: int = 3) -> TorchvisionResNet:
        return TorchvisionResNet(arch, num_classes, in_channels)

    return build


for _depth in (18, 34, 50, 101, 152):
    _register(_depth)
