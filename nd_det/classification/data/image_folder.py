"""ImageNet-style folders: ``<root>/<split>/<class name>/<image>``, classes sorted by name."""

import os

from torchvision.datasets import ImageFolder

from ...errors import FileError

__all__ = ["build_image_folder", "check_image_folder"]


def check_image_folder(root: str, split_dir: str) -> str:
    """``<root>/<split_dir>``; FileError when that folder does not exist."""
    path = os.path.join(root, split_dir)
    if not os.path.isdir(path):
        raise FileError(
            f"image folder {path} not found: expected <root>/{split_dir}/<class>/<image> "
            "(e.g. ImageNet's train/ and val/ with one sub-folder per class). Set data.root, "
            "or data.train_dir / data.test_dir."
        )
    return path


def build_image_folder(root: str, split_dir: str, transform) -> ImageFolder:
    path = check_image_folder(root, split_dir)
    try:
        return ImageFolder(path, transform=transform)
    except FileNotFoundError as e:  # torchvision: no class sub-folder, or a class without images
        raise FileError(
            f"image folder {path}: {e}. Expected <class>/<image> files "
            "inside (one sub-folder per class)."
        ) from None
