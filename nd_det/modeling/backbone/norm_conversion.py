"""Turn the BatchNorm layers of a built model into the normalisation a config names
("FrozenBN", "BN", "SyncBN", "GN"), in place.

torchvision builds its classifiers with ``nn.BatchNorm2d``; detectron2 and torch already convert
BatchNorm to FrozenBatchNorm2d (``FrozenBatchNorm2d.convert_frozen_batchnorm``) and to
``nn.SyncBatchNorm`` (``convert_sync_batchnorm``), and those are used here.  Neither converts to
GroupNorm, so that one conversion is written here.
"""

import math

from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["BATCH_NORM_CHOICES", "group_norm_for", "convert_batch_norms"]

BATCH_NORM_CHOICES = ("FrozenBN", "BN", "SyncBN", "GN")


def group_norm_for(batch_norm: nn.modules.batchnorm._BatchNorm) -> nn.GroupNorm:
    """A GroupNorm for the channels of ``batch_norm``, with the largest group count <= 32 that
    divides them (detectron2's "GN" is GroupNorm(32, C), which 16-, 24- or 40-channel layers
    cannot use)."""
    channels = batch_norm.num_features
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=batch_norm.eps)


def _to_group_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return group_norm_for(module)
    for name, child in module.named_children():
        new_child = _to_group_norm(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


def convert_batch_norms(module: nn.Module, norm: str) -> nn.Module:
    """``module`` with every BatchNorm layer replaced as ``norm`` says ("BN" keeps them).
    Children are replaced in place; the return value is ``module`` itself unless ``module``
    is a BatchNorm layer."""
    if norm == "BN":
        return module
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if norm == "GN":
        return _to_group_norm(module)
    raise ValueError(f"norm {norm!r} is not one of {list(BATCH_NORM_CHOICES)}")
