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

__all__ = ["CIFAR100Dataset", "CIFAR100_FILES"]

CIFAR100_FILES = ("train", "test", "meta")


class CIFAR100Dataset(CIFAR100):
    """torchvision's CIFAR100 with errors that name the missing or changed file.

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
        official = {**dict(self.train_list + self.test_list), "meta": self.meta["md5"]}
        for name, md5 in official.items() if not download else ():
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or (verify_checksums and not check_md5(path, md5)):
                raise FileError(
                    f"{path} is missing or not the official CIFAR-100 file: extract "
                    "cifar-100-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) into data.root, "
                    "set data.download true, or data.verify_checksums false for your own files"
                )
        if not verify_checksums:
            # instance-level copies without checksums: torchvision then only checks existence
            self.train_list = [(name, None) for name, _ in self.train_list]
            self.test_list = [(name, None) for name, _ in self.test_list]
            self.meta = dict(self.meta, md5=None)
        super().__init__(root, train=train, transform=transform, download=download)
