"""Write a tiny, learnable COCO-format detection dataset to a folder, for tests and smoke runs.

Each image is a noisy grey background with 1-3 (by default) filled shapes; the class of a shape
fixes both its form and its colour, so even a small detector trained for a few hundred
iterations can tell them apart:

    class 0 "red_rectangle", 1 "green_ellipse", 2 "blue_triangle",
    3 "yellow_rectangle", 4 "magenta_ellipse", 5 "cyan_triangle"

Shapes never overlap.  Everything is drawn from ``numpy.random.RandomState(seed)``: the same
arguments write byte-identical files.  Usage::

    from helpers.tiny_coco import write_tiny_coco      # under pytest, from any test in tests/
    json_path, image_dir = write_tiny_coco(tmp_path, num_images=8, size=(96, 128), num_classes=2)
    register_coco_dataset("tiny_train", json_path, image_dir)
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASS_NAMES", "write_tiny_coco"]

_COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 70, 220),
    "yellow": (225, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
}
_SHAPES = ("rectangle", "ellipse", "triangle")
CLASS_NAMES = tuple(f"{colour}_{_SHAPES[index % 3]}" for index, colour in enumerate(_COLOURS))


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[int, int, int, int],
    colour: tuple[int, int, int],
) -> None:
    """Fill ``shape`` so that it touches all four sides of the pixel box [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = box
    corners = [x0, y0, x1 - 1, y1 - 1]  # PIL's corners are inclusive pixels
    if shape == "rectangle":
        draw.rectangle(corners, fill=colour)
    elif shape == "ellipse":
        draw.ellipse(corners, fill=colour)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)


def _place(
    rng: np.random.RandomState, height: int, width: int, taken: list, min_side: int, max_side: int
) -> Optional[tuple[int, int, int, int]]:
    """A random box (x0, y0, x1, y1) inside the image that overlaps no box in ``taken``."""
    for _ in range(50):
        box_w = int(rng.randint(min_side, max_side + 1))
        box_h = int(rng.randint(min_side, max_side + 1))
        x0 = int(rng.randint(0, width - box_w + 1))
        y0 = int(rng.randint(0, height - box_h + 1))
        box = (x0, y0, x0 + box_w, y0 + box_h)
        if all(box[2] <= o[0] or o[2] <= box[0] or box[3] <= o[1] or o[3] <= box[1] for o in taken):
            return box
    return None


def write_tiny_coco(
    root,
    num_images: int = 8,
    size: tuple[int, int] = (96, 128),
    num_classes: int = 2,
    seed: int = 0,
    empty_images: int = 0,
    objects_per_image: tuple[int, int] = (1, 3),
    category_ids: Optional[Sequence[int]] = None,
    image_format: str = "png",
    json_name: str = "annotations.json",
    image_dirname: str = "images",
) -> tuple[Path, Path]:
    """Write ``num_images`` images and a COCO instances JSON under ``root``.

    Args:
        root: folder to write into (created if missing).
        num_images: number of images.
        size: (height, width) of every image, in pixels.
        num_classes: 1..6 classes (see the module docstring for their names and looks).
        seed: seed of everything random; same arguments -> byte-identical files.
        empty_images: the LAST ``empty_images`` images get no shape and no annotation.
        objects_per_image: (min, max) shapes drawn on each other image (fewer when they do not fit).
        category_ids: the COCO ids of the classes (default 1..num_classes); give e.g. (3, 7, 20)
            to get non-contiguous ids.
        image_format: "png" or "jpg".
        json_name, image_dirname: names of the JSON file and the image folder under ``root``.

    Returns:
        (json_path, image_dir): pass them to ``register_coco_dataset(name, json_path, image_dir)``.
    """
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes={num_classes}: use 1..{len(CLASS_NAMES)}")
    if not 0 <= empty_images <= num_images:
        raise ValueError(f"empty_images={empty_images} must lie in 0..num_images={num_images}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format={image_format!r}: use 'png' or 'jpg'")
    category_ids = list(range(1, num_classes + 1)) if category_ids is None else list(category_ids)
    if len(category_ids) != num_classes or len(set(category_ids)) != num_classes:
        raise ValueError(f"category_ids={category_ids} must be {num_classes} distinct ints")
    height, width = size
    min_side = max(8, min(height, width) // 6)
    max_side = max(min_side, min(height, width) // 3)

    root = Path(root)
    image_dir = root / image_dirname
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    images, annotations = [], []
    for index in range(num_images):
        # background: a per-image grey level with per-pixel noise
        base = rng.randint(90, 170)
        pixels = np.clip(rng.normal(base, 18, size=(height, width, 3)), 0, 255).astype(np.uint8)
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        taken = []
        wanted = (
            0
            if index >= num_images - empty_images
            else int(rng.randint(objects_per_image[0], objects_per_image[1] + 1))
        )
        for _ in range(wanted):
            box = _place(rng, height, width, taken, min_side, max_side)
            if box is None:
                continue
            taken.append(box)
            label = int(rng.randint(num_classes))
            colour = _COLOURS[CLASS_NAMES[label].split("_")[0]]
            _draw_shape(draw, _SHAPES[label % 3], box, colour)
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category_ids[label],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        # light noise over the shapes too, so that they are not flat colour
        noisy = np.asarray(canvas).astype(np.int16) + rng.randint(-12, 13, size=(height, width, 3))
        file_name = f"{index:04d}.{image_format}"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            image_dir / file_name, **({"quality": 95} if image_format == "jpg" else {})
        )
        images.append({"id": index + 1, "file_name": file_name, "height": height, "width": width})

    categories = [
        {"id": cat_id, "name": CLASS_NAMES[label], "supercategory": "shape"}
        for label, cat_id in enumerate(category_ids)
    ]
    json_path = root / json_name
    tmp_path = json_path.with_name(json_path.name + ".tmp")
    with open(tmp_path, "w", encoding="utf-8") as stream:
        json.dump(
            {"images": images, "annotations": annotations, "categories": categories},
            stream,
            indent=1,
        )
    os.replace(tmp_path, json_path)
    return json_path, image_dir
