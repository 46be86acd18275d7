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
    "check_fashion_mnist_files",
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


def check_fashion_mnist_files(root: str) -> None:
    """FileError naming the first of the four IDX files that is not in ``root``."""
    for train in (True, False):
        for kind in ("images-idx3", "labels-idx1"):
            _find(root, f"{_PREFIX[train]}-{kind}-ubyte")


def load_fashion_mnist(root: str, train: bool, transform=None) -> InMemoryImages:
    images = read_idx(_find(root, f"{_PREFIX[train]}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{_PREFIX[train]}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise FileError(
            f"Fashion-MNIST files in {root} disagree: images {images.shape}, "
            f"labels {labels.shape}; "
            "reinstall them (apt-get install --reinstall dataset-fashion-mnist)"
        )
    return InMemoryImages(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype("int64")),
        transform,
        FASHION_MNIST_CLASSES,
    )
