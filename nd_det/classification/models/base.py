"""Common head of every classifier: global average pooling, linear layer, ClassifierOutput."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..outputs import ClassifierOutput
from .preact import run_stage

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """Base class.  A subclass builds its body, then calls ``_init_head``.  The default
    ``forward_features(x) -> (stage_features, preact_features, final_map)`` runs ``self.stem``,
    then each module of ``self.stages`` through :func:`~.preact.run_stage` (its output and its
    output before the final ReLU are the stage's two features) and ``head_input`` on the last
    stage's output; bodies of another shape override ``forward_features``.

    The two feature lists are those of :class:`~..outputs.ClassifierOutput`, less its last level
    (the embedding); ``final_map`` is the map that is average-pooled into the embedding.  Pooling
    is adaptive, so every model accepts any input size its down-sampling allows.
    """

    num_classes: int
    embedding_dim: int
    feature_channels: list[int]

    def _init_head(
        self, stage_channels: Sequence[int], embedding_dim: int, num_classes: int
    ) -> None:
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.feature_channels = [int(c) for c in stage_channels] + [self.embedding_dim]
        self.fc = nn.Linear(self.embedding_dim, self.num_classes)

    def forward_features(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        feats, preacts = [], []
        for stage in self.stages:
            x, pre = run_stage(stage, x)
            feats.append(x)
            preacts.append(pre)
        return feats, preacts, self.head_input(x)

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """The map that is pooled into the embedding, from the last stage's output."""
        return x

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        stages, preacts, final_map = self.forward_features(x)
        embedding = F.adaptive_avg_pool2d(final_map, 1).flatten(1)
        logits = self.fc(embedding)
        # the last level of both lists is the embedding (the reference's pooled map)
        level = embedding[:, :, None, None]
        return ClassifierOutput(
            logits=logits,
            embedding=embedding,
            features=list(stages) + [level],
            preact_features=list(preacts) + [level],
        )


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    relu: bool = True,
) -> nn.Sequential:
    """Convolution (no bias, padding ``kernel // 2``) + BatchNorm (+ in-place ReLU)."""
    layers = [
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def make_stage(
    block, in_channels: int, out_channels: int, count: int, stride: int, **kwargs
) -> nn.Sequential:
    """``count`` blocks ``block(in, out, stride, **kwargs)``: the first one changes the width and
    strides, the others keep both."""
    layers = [block(in_channels, out_channels, stride, **kwargs)]
    layers += [block(out_channels, out_channels, 1, **kwargs) for _ in range(count - 1)]
    return nn.Sequential(*layers)


def residual_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 convolution + BatchNorm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal convolutions, unit-scale BatchNorm, zero biases (the usual CIFAR init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
