"""ImageNet-style folders: ``<root>/<split>/<class name>/<image>``, classes sorted by name."""
import os

from torchvision.datasets import ImageFolder

__all__ = ["build_image_folder"]


def build_image_folder(root: str, split_dir: str, transform) -> ImageFolder:
    path = os.path.join(root, split_dir)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"image folder {path} not found: expected <root>/{split_dir}/<class>/<image> "
            "(e.g. ImageNet's train/ and val/ with one sub-folder per class). Set data.root, "
            "or data.train_dir / data.test_dir."
        )
    return ImageFolder(path, transform=transform)
