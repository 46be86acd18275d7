"""Train / evaluation transforms of each dataset family."""

from collections.abc import Sequence

import torch
from torchvision import transforms as T

from ...errors import MissingDependencyError

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cifar_transform",
    "imagenet_transform",
    "small_tensor_transform",
]

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cifar_transform(augment: bool) -> T.Compose:
    """PIL 32x32 -> normalised tensor; training adds a 4-pixel padded random crop and a flip."""
    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    return T.Compose(steps + [T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])


def imagenet_transform(augment: bool, image_size: int = 224, recipe: str = "standard") -> T.Compose:
    """The standard ImageNet recipe: random-resized crop + flip for training; resize to
    image_size * 256 / 224 and centre crop for evaluation.  ``recipe="deit"``: the DeiT recipe
    of the reference's ImageNet/DeiT code, timm's training transform (bicubic random-resized
    crop + flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 'pixel') and a bicubic
    resize for evaluation."""
    resize_mode = T.InterpolationMode.BICUBIC if recipe == "deit" else T.InterpolationMode.BILINEAR
    if augment and recipe == "deit":
        try:
            from timm.data import create_transform
        except ImportError:
            raise MissingDependencyError(
                "data.augment deit is timm's DeiT augmentation: pip install 'nd-det[timm]'"
            ) from None

        return create_transform(
            image_size,
            is_training=True,
            color_jitter=None,
            auto_augment="rand-m9-mstd0.5-inc1",
            interpolation="bicubic",
            re_prob=0.25,
            re_mode="pixel",
            re_count=1,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    if augment:
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(round(image_size * 256 / 224), resize_mode), T.CenterCrop(image_size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def small_tensor_transform(
    augment: bool, size: int, padding: int, flip: bool, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """For uint8 (C, H, W) tensors already in memory (Fashion-MNIST, digits)."""
    steps = []
    if augment:
        steps.append(T.RandomCrop(size, padding=padding))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ConvertImageDtype(torch.float32), T.Normalize(mean, std)])
