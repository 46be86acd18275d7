"""Datasets by name, built from the ``data`` section of a training config.

``build_dataset(data_cfg, train=True, augment=True)`` returns ``(dataset, DatasetInfo)``; items
are ``(float image tensor (C, H, W), int label)``.
"""

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import Dataset, Subset

from ...errors import ConfigError, MissingDependencyError
from ...utils.registry import Registry, lookup, register_as, registered_names
from .cifar100 import CIFAR100Dataset, check_cifar100_files
from .digits import load_digits_split
from .fashion_mnist import DEBIAN_FASHION_MNIST_DIR, check_fashion_mnist_files, load_fashion_mnist
from .image_folder import build_image_folder, check_image_folder
from .transforms import cifar_transform, imagenet_transform, small_tensor_transform

__all__ = [
    "DATASET_REGISTRY",
    "DatasetInfo",
    "build_dataset",
    "available_datasets",
    "check_dataset",
]

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
    check: Callable[[dict, str], None]  # raises a UserError when the files are not there (cheap)
    default_root: str = ""  # where data.root points when it is null
    image_size: int = 0  # the images' side (0: data.image_size)


def _check_cifar100(cfg: dict, root: str) -> None:
    if not cfg.get("download", False):
        check_cifar100_files(root)


def _cifar100(cfg: dict, root: str, train: bool, augment: bool) -> Dataset:
    return CIFAR100Dataset(
        root,
        train,
        cifar_transform(augment),
        download=bool(cfg.get("download", False)),
        verify_checksums=bool(cfg.get("verify_checksums", True)),
    )


def _check_image_folder(cfg: dict, root: str) -> None:
    for split_dir in (cfg.get("train_dir", "train"), cfg.get("test_dir", "val")):
        check_image_folder(root, split_dir)


def _image_folder(cfg: dict, root: str, train: bool, augment: bool) -> Dataset:
    split_dir = cfg.get("train_dir", "train") if train else cfg.get("test_dir", "val")
    transform = imagenet_transform(
        augment, int(cfg.get("image_size", 224)), cfg.get("augment", "standard")
    )
    return build_image_folder(root, split_dir, transform)


def _check_fashion_mnist(cfg: dict, root: str) -> None:
    check_fashion_mnist_files(root)


def _fashion_mnist(cfg: dict, root: str, train: bool, augment: bool) -> Dataset:
    transform = small_tensor_transform(augment, 28, 2, True, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return load_fashion_mnist(root, train, transform)


def _check_digits(cfg: dict, root: str) -> None:
    if importlib.util.find_spec("sklearn") is None:
        raise MissingDependencyError(
            "data.name digits reads scikit-learn's bundled digits, but "
            "scikit-learn is not installed: pip install scikit-learn"
        )


def _digits(cfg: dict, root: str, train: bool, augment: bool) -> Dataset:
    transform = small_tensor_transform(augment, 8, 1, False, DIGITS_MEAN, DIGITS_STD)
    return load_digits_split(train, transform)


# each entry is (builder, image channels, file check, default root): the builder alone would
# not carry them
DATASET_REGISTRY = Registry("DATASET")
for _name, _dataset_entry in (
    ("cifar100", _Entry(_cifar100, 3, _check_cifar100, "datasets/cifar100", 32)),
    ("image_folder", _Entry(_image_folder, 3, _check_image_folder, "datasets/imagenet")),
    (
        "fashion_mnist",
        _Entry(_fashion_mnist, 1, _check_fashion_mnist, DEBIAN_FASHION_MNIST_DIR, 28),
    ),
    ("digits", _Entry(_digits, 1, _check_digits, "", 8)),
):
    register_as(DATASET_REGISTRY, _name, _dataset_entry, "dataset")


def available_datasets() -> list[str]:
    return registered_names(DATASET_REGISTRY)


def _subset(dataset: Dataset, size, seed: int, key: str) -> Dataset:
    if size is None:
        return dataset
    size = int(size)
    if not 0 < size <= len(dataset):
        raise ConfigError(
            f"data.{key} must be between 1 and {len(dataset)} (the split's size); got {size}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    keep = torch.randperm(len(dataset), generator=generator)[:size].sort().values.tolist()
    subset = Subset(dataset, keep)
    subset.classes = getattr(dataset, "classes", None)
    return subset


def _entry(data_cfg: dict) -> tuple[_Entry, str]:
    """The registered entry of ``data.name`` and the dataset's root folder."""
    name = data_cfg.get("name")
    entry = lookup(DATASET_REGISTRY, name, f"dataset data.name={name!r}")
    return entry, data_cfg.get("root") or entry.default_root


def check_dataset(data_cfg: dict) -> None:
    """The dataset's name is registered and its files are where the config says (both splits);
    nothing is read beyond file names, so this runs before anything else."""
    entry, root = _entry(data_cfg)
    augment = data_cfg.get("augment", "standard")
    if augment != "standard":
        if data_cfg.get("name") != "image_folder":
            raise ConfigError(
                f"data.augment={augment!r} applies to data.name=image_folder "
                "only; set data.augment=standard"
            )
        if importlib.util.find_spec("timm") is None:
            raise MissingDependencyError(
                f"data.augment={augment!r} is timm's DeiT augmentation, but timm is not "
                "installed: pip install 'nd-det[timm]' (or pip install timm)"
            )
    entry.check(data_cfg, root)


def build_dataset(data_cfg: dict, train: bool, augment: bool) -> tuple[Dataset, DatasetInfo]:
    name = data_cfg.get("name")
    entry, root = _entry(data_cfg)
    dataset = entry.build(data_cfg, root, train, augment)
    classes = list(getattr(dataset, "classes", None) or [])
    if not classes:
        raise ValueError(f"dataset {name!r} reports no classes")
    key = "train_subset" if train else "test_subset"
    dataset = _subset(dataset, data_cfg.get(key), data_cfg.get("subset_seed", 0), key)
    image_size = entry.image_size or int(data_cfg.get("image_size", 224))
    return dataset, DatasetInfo(len(classes), entry.in_channels, classes, image_size)
