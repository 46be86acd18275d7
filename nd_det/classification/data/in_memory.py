"""A dataset of uint8 images held in memory as one (N, C, H, W) tensor."""

from collections.abc import Sequence
from typing import Optional

import torch
from torch.utils.data import Dataset

__all__ = ["InMemoryImages"]


class InMemoryImages(Dataset):
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform=None,
        classes: Optional[Sequence[str]] = None,
    ):
        self.images = images
        self.targets = labels.to(torch.int64)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])
