"""Batch mixing of the DeiT recipe (``data.mixup_alpha``, ``data.cutmix_alpha``): torchvision's
MixUp / CutMix on a batch, one of the two per batch when both are on (timm's ``Mixup`` of the
reference does the same with switch probability 0.5).  Labels become (N, num_classes) mixed
one-hot targets: the ``ce`` term reads them as probabilities (its ``label_smoothing`` then
smooths them as timm's mixed targets are), the ``nd`` term mixes the class means alike."""

from typing import Callable, Optional

from torchvision.transforms import v2

__all__ = ["build_batch_mixer", "mixes_labels"]


def mixes_labels(data_cfg: dict) -> bool:
    return float(data_cfg.get("mixup_alpha", 0)) > 0 or float(data_cfg.get("cutmix_alpha", 0)) > 0


def build_batch_mixer(data_cfg: dict, num_classes: int) -> Optional[Callable]:
    """``mixer(images, labels) -> (images, soft targets)``, or None when mixing is off."""
    mixers = [
        cls(alpha=float(data_cfg[key]), num_classes=num_classes)
        for cls, key in ((v2.MixUp, "mixup_alpha"), (v2.CutMix, "cutmix_alpha"))
        if float(data_cfg.get(key, 0)) > 0
    ]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
