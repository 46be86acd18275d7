"""Fashion-MNIST (Xiao et al., 2017) from its IDX files, e.g. the Debian package
``dataset-fashion-mnist`` (``dpkg -L dataset-fashion-mnist`` shows where they are)."""

import os

import torch

from ...errors import FileError
from .idx_format import read_idx
from .in_memory import InMemoryImages

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DEBIAN_FASHION_MNIST_DIR",
    "load_fashion_mnist",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# where the Debian/Ubuntu package installs the files
DEBIAN_FASHION_MNIST_DIR = os.path.join(os.sep, "usr", "share", "datasets", "fashion-mnist")
_PREFIX = {True: "train", False: "t10k"}


def _find(root: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileError(
        f"Fashion-MNIST file {os.path.join(root, stem)}(.gz) not found. Install it with "
        "`apt-get install dataset-fashion-mnist` (files then in "
        f"{DEBIAN_FASHION_MNIST_DIR}) or point data.root at a folder holding the four IDX files."
    )


def load_fashion_mnist(root: str, train: bool, transform=None) -> InMemoryImages:
    images = read_idx(_find(root, f"{_PREFIX[train]}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{_PREFIX[train]}-labels-idx1-ubyte"))
    return InMemoryImages(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype("int64")),
        transform,
        FASHION_MNIST_CLASSES,
    )
