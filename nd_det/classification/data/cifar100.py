"""CIFAR-100 from its official python pickle files, read by torchvision's loader.

Expected layout (what ``cifar-100-python.tar.gz`` extracts to)::

    <root>/cifar-100-python/train   pickle: b'data' (N, 3072) uint8, b'fine_labels', ...
    <root>/cifar-100-python/test
    <root>/cifar-100-python/meta    pickle: b'fine_label_names', b'coarse_label_names'
"""

import os

from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import check_md5

from ...errors import FileError

__all__ = ["CIFAR100Dataset", "CIFAR100_FILES", "check_cifar100_files"]

CIFAR100_FILES = ("train", "test", "meta")
_HOME = "https://www.cs.toronto.edu/~kriz/cifar.html"


def check_cifar100_files(root: str) -> None:
    """FileError naming the files of ``<root>/cifar-100-python`` that are not there."""
    folder = os.path.join(root, CIFAR100.base_folder)
    missing = [f for f in CIFAR100_FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileError(
            f"CIFAR-100 not found: {', '.join(os.path.join(folder, f) for f in missing)} "
            f"missing. Download cifar-100-python.tar.gz from {_HOME} and extract it into "
            f"{root} (giving {folder}/), set data.root to where it is, or set "
            "data.download: true."
        )


class CIFAR100Dataset(CIFAR100):
    """torchvision's CIFAR100 with errors that name the missing or corrupt file.

    ``verify_checksums=False`` accepts files that differ from the official release (a subset you
    wrote yourself in the same pickle format); the format itself is still required.
    """

    def __init__(
        self,
        root: str,
        train: bool,
        transform=None,
        download: bool = False,
        verify_checksums: bool = True,
    ):
        folder = os.path.join(root, self.base_folder)
        if not download:
            check_cifar100_files(root)
        if verify_checksums:
            expected = dict(self.train_list + self.test_list)
            expected[self.meta["filename"]] = self.meta["md5"]
            for name, md5 in expected.items():
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not check_md5(path, md5):
                    raise FileError(
                        f"{path} is not the official CIFAR-100 file (md5 differs from {md5}). "
                        "Re-extract cifar-100-python.tar.gz, or set data.verify_checksums: false "
                        "to use your own files in the same format."
                    )
        else:
            # instance-level copies without checksums: torchvision then only checks existence
            self.train_list = [(name, None) for name, _ in self.train_list]
            self.test_list = [(name, None) for name, _ in self.test_list]
            self.meta = dict(self.meta, md5=None)
        super().__init__(root, train=train, transform=transform, download=download)
