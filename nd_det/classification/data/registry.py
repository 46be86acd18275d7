"""Datasets by name, built from the ``data`` section of a training config.

``build_dataset(data_cfg, train=True, augment=True)`` returns ``(dataset, DatasetInfo)``; items
are ``(float image tensor (C, H, W), int label)``.  A dataset's files are checked where they are
read (a missing file names itself and the fix)."""

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import Dataset, Subset

from ...errors import ConfigError
from ...utils.registry import Registry, lookup, register_as, registered_names
from .cifar100 import CIFAR100Dataset
from .digits import load_digits_split
from .fashion_mnist import DEBIAN_FASHION_MNIST_DIR, load_fashion_mnist
from .transforms import cifar_transform, imagenet_transform, small_tensor_transform

__all__ = ["DATASET_REGISTRY", "DatasetInfo", "build_dataset", "available_datasets"]

FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
DIGITS_MEAN, DIGITS_STD = (0.3050,), (0.3750,)


@dataclass
class DatasetInfo:
    num_classes: int
    in_channels: int
    classes: list[str]
    image_size: int = 224  # the side of the images the model sees


@dataclass(frozen=True)
class _Entry:
    build: Callable[[dict, str, bool, bool], Dataset]  # (data section, root, train, augment)
    in_channels: int
    default_root: str = ""  # where data.root points when it is empty
    image_size: int = 0  # the images' side (0: data.image_size)


def _cifar100(cfg, root: str, train: bool, augment: bool) -> Dataset:
    return CIFAR100Dataset(
        root, train, cifar_transform(augment), cfg.download, cfg.verify_checksums
    )


def _image_folder(cfg, root: str, train: bool, augment: bool) -> Dataset:
    from torchvision.datasets import ImageFolder

    transform = imagenet_transform(augment, cfg.image_size, cfg.augment)
    return ImageFolder(f"{root}/{cfg.train_dir if train else cfg.test_dir}", transform)


def _fashion_mnist(cfg, root: str, train: bool, augment: bool) -> Dataset:
    transform = small_tensor_transform(augment, 28, 2, True, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return load_fashion_mnist(root, train, transform)


def _digits(cfg, root: str, train: bool, augment: bool) -> Dataset:
    transform = small_tensor_transform(augment, 8, 1, False, DIGITS_MEAN, DIGITS_STD)
    return load_digits_split(train, transform)


# each entry is (builder, image channels, default root, image side): the builder alone would
# not carry them
DATASET_REGISTRY = Registry("DATASET")
for _name, _dataset_entry in (
    ("cifar100", _Entry(_cifar100, 3, "datasets/cifar100", 32)),
    ("image_folder", _Entry(_image_folder, 3, "datasets/imagenet")),
    ("fashion_mnist", _Entry(_fashion_mnist, 1, DEBIAN_FASHION_MNIST_DIR, 28)),
    ("digits", _Entry(_digits, 1, "", 8)),
):
    register_as(DATASET_REGISTRY, _name, _dataset_entry, "dataset")


def available_datasets() -> list[str]:
    return registered_names(DATASET_REGISTRY)


def _subset(dataset: Dataset, size, seed: int, key: str) -> Dataset:
    if size is None:
        return dataset
    if not 0 < size <= len(dataset):
        raise ConfigError(f"data.{key} {size}: give 1 to {len(dataset)} (the split's size)")
    generator = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(len(dataset), generator=generator)[:size].sort().values.tolist()
    subset = Subset(dataset, keep)
    subset.classes = dataset.classes
    return subset


def build_dataset(data_cfg, train: bool, augment: bool) -> tuple[Dataset, DatasetInfo]:
    entry = lookup(DATASET_REGISTRY, data_cfg.name, f"dataset data.name={data_cfg.name!r}")
    dataset = entry.build(data_cfg, data_cfg.root or entry.default_root, train, augment)
    key = "train_subset" if train else "test_subset"
    dataset = _subset(dataset, data_cfg[key], data_cfg.subset_seed, key)
    image_size = entry.image_size or data_cfg.image_size
    return dataset, DatasetInfo(
        len(dataset.classes), entry.in_channels, dataset.classes, image_size
    )
