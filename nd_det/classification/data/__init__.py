"""Datasets of the classification package: CIFAR-100, ImageNet-style folders, Fashion-MNIST
(IDX files) and scikit-learn digits, all built by name from a config's ``data`` section."""

from .cifar100 import CIFAR100Dataset
from .digits import load_digits_split
from .fashion_mnist import load_fashion_mnist
from .idx_format import read_idx
from .in_memory import InMemoryImages
from .mixing import build_batch_mixer, mixes_labels
from .registry import DatasetInfo, available_datasets, build_dataset
from .samplers import ShardSampler

__all__ = [
    "build_dataset",
    "available_datasets",
    "DatasetInfo",
    "CIFAR100Dataset",
    "load_fashion_mnist",
    "load_digits_split",
    "read_idx",
    "InMemoryImages",
    "ShardSampler",
    "build_batch_mixer",
    "mixes_labels",
]
