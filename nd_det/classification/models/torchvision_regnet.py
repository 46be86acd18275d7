"""torchvision's RegNetY-16GF (Radosavovic et al., 2020) as a Classifier: the teacher of the DeiT
row (the reference used DeiT's RegNetY-16GF; torchvision publishes one of the same design).

The torchvision modules keep their attribute names (stem, trunk_output, fc), so a torchvision
state dict (e.g. ``regnet_y_16gf-3e4a00f9.pth``) loads with every key matched.  ReviewKD taps
the four stages (224, 448, 1232 and 3024 channels at strides 4, 8, 16, 32).  Embedding: 3024.
Pre-activation features: each stage's last block output before its final ReLU.
"""

import torch.nn.functional as F
import torchvision
from torch import nn

from .base import Classifier
from .registry import register_classifier

__all__ = ["TorchvisionRegNet"]


@register_classifier("regnet_y_16gf", "imagenet", "torchvision RegNetY-16GF")
class TorchvisionRegNet(Classifier):
    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        net = torchvision.models.regnet_y_16gf(weights=None, num_classes=num_classes)
        if in_channels != 3:
            conv = net.stem[0]
            net.stem[0] = nn.Conv2d(in_channels, conv.out_channels, 3, 2, 1, bias=False)
            nn.init.kaiming_normal_(net.stem[0].weight, mode="fan_out", nonlinearity="relu")
        self.stem, self.trunk_output = net.stem, net.trunk_output
        stage_channels = [stage[-1].f.c[0].out_channels for stage in self.trunk_output]
        self._init_head(stage_channels, net.fc.in_features, num_classes)
        self.fc = net.fc  # keep torchvision's initialisation and key names

    def forward_features(self, x):
        x = self.stem(x)
        feats, preacts = [], []
        for stage in self.trunk_output:
            for block in list(stage)[:-1]:
                x = block(x)
            last = stage[-1]
            # torchvision's ResBottleneckBlock forward, keeping the sum before its (in-place,
            # hence not called here) ReLU
            pre = (x if last.proj is None else last.proj(x)) + last.f(x)
            x = F.relu(pre)
            feats.append(x)
            preacts.append(pre)
        return feats, preacts, x
