"""Datasets by name, built from the ``data`` section of a training config.

``build_dataset(data_cfg, train=True, augment=True)`` returns ``(dataset, DatasetInfo)``; items
are ``(float image tensor (C, H, W), int label)``.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch.utils.data import Dataset, Subset

from ...utils.registry import Registry, lookup, register_as, registered_names
from .cifar100 import CIFAR100Dataset
from .digits import load_digits_split
from .fashion_mnist import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist
from .image_folder import build_image_folder
from .transforms import cifar_transform, imagenet_transform, small_tensor_transform

__all__ = ["DATASET_REGISTRY", "DatasetInfo", "build_dataset", "available_datasets"]

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
DIGITS_MEAN, DIGITS_STD = (0.3050,), (0.3750,)


@dataclass
class DatasetInfo:
    num_classes: int
    in_channels: int
    classes: List[str]


@dataclass(frozen=True)
class _Entry:
    build: Callable[[Dict, bool, bool], Dataset]
    in_channels: int


def _cifar100(cfg: Dict, train: bool, augment: bool) -> Dataset:
    return CIFAR100Dataset(cfg.get("root") or "datasets/cifar100", train, cifar_transform(augment),
                           download=bool(cfg.get("download", False)),
                           verify_checksums=bool(cfg.get("verify_checksums", True)))


def _image_folder(cfg: Dict, train: bool, augment: bool) -> Dataset:
    split_dir = cfg.get("train_dir", "train") if train else cfg.get("test_dir", "val")
    transform = imagenet_transform(augment, int(cfg.get("image_size", 224)))
    return build_image_folder(cfg.get("root") or "datasets/imagenet", split_dir, transform)


def _fashion_mnist(cfg: Dict, train: bool, augment: bool) -> Dataset:
    transform = small_tensor_transform(augment, 28, 2, True, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return load_fashion_mnist(cfg.get("root") or DEBIAN_FASHION_MNIST_DIR, train, transform)


def _digits(cfg: Dict, train: bool, augment: bool) -> Dataset:
    transform = small_tensor_transform(augment, 8, 1, False, DIGITS_MEAN, DIGITS_STD)
    return load_digits_split(train, transform)


# each entry is (builder, image channels): the builder alone would not carry the channel count
DATASET_REGISTRY = Registry("DATASET")
for _name, _build, _channels in (("cifar100", _cifar100, 3), ("image_folder", _image_folder, 3),
                                 ("fashion_mnist", _fashion_mnist, 1), ("digits", _digits, 1)):
    register_as(DATASET_REGISTRY, _name, _Entry(_build, _channels), "dataset")


def available_datasets() -> List[str]:
    return registered_names(DATASET_REGISTRY)


def _subset(dataset: Dataset, size, seed: int, key: str) -> Dataset:
    if size is None:
        return dataset
    size = int(size)
    if not 0 < size <= len(dataset):
        raise ValueError(f"data.{key} must be between 1 and {len(dataset)} (the split's size); "
                         f"got {size}")
    generator = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(len(dataset), generator=generator)[:size].sort().values.tolist()
    subset = Subset(dataset, keep)
    subset.classes = getattr(dataset, "classes", None)
    return subset


def build_dataset(data_cfg: Dict, train: bool, augment: bool) -> Tuple[Dataset, DatasetInfo]:
    name = data_cfg.get("name")
    entry = lookup(DATASET_REGISTRY, name, f"dataset data.name={name!r}")
    dataset = entry.build(data_cfg, train, augment)
    classes = list(getattr(dataset, "classes", None) or [])
    if not classes:
        raise ValueError(f"dataset {name!r} reports no classes")
    key = "train_subset" if train else "test_subset"
    dataset = _subset(dataset, data_cfg.get(key), data_cfg.get("subset_seed", 0), key)
    return dataset, DatasetInfo(len(classes), entry.in_channels, classes)
