"""The embedded dataset: real tree-crown boxes from the deepforest package, as COCO, tiled and split.

Nothing is downloaded: the source images and their hand-drawn boxes ship in the PyPI package
deepforest (see :mod:`nd_det.data.deepforest_source`).  The build:

- one class, ``"tree"``: deepforest's labels ``Tree``, ``Dead`` and ``Alive`` all become it (the
  original label is kept in each annotation as ``"source_label"``, which detectron2 ignores);
- images no larger than ``TILE_SIZE`` (OSBS_029, SOAP_061: 400 x 400) are kept whole; the two
  large YELL crops are cut into non-overlapping ``TILE_SIZE`` x ``TILE_SIZE`` tiles (narrower edge
  tiles kept from ``MIN_EDGE_TILE`` px; boxes clipped to each tile, pieces under
  ``MIN_VISIBLE_FRACTION`` of the box's area or with a side under ``MIN_BOX_SIDE`` px dropped;
  see :mod:`nd_det.data.tiling`);
- a deterministic split by tile: tile (row r, column c) of a large image is in **val** when
  ``(r + 2 c) mod 5 == 2`` (one tile in five, spread over the whole image, no two val tiles side by
  side); every other tile and the whole 400 x 400 images are in **train**.  Tiles do not overlap,
  so no pixel is in both splits;
- tiles are written as PNG under ``images/`` with ``train.json`` and ``val.json`` (COCO; each
  image entry also records ``"source"`` and its ``"window"`` [x0, y0, x1, y1] in the source image)
  and ``build_stamp.json``.

With deepforest 2.1.0 this gives train: 38 tiles / 752 boxes, val: 9 tiles / 197 boxes.

Where: ``root`` if given, else ``$ND_DET_DATA/deepforest_trees`` when the environment variable
``ND_DET_DATA`` is set (a folder for nd-det's datasets, like detectron2's
``DETECTRON2_DATASETS``), else ``<checkout>/datasets/deepforest_trees`` when nd_det runs from a
source checkout (git-ignored), else ``~/.cache/nd_det/deepforest_trees``.

Built once; rebuilt (atomically, see :mod:`nd_det.data.atomic_build`) when a file is missing or the
stamp differs (build format version, tiling/split parameters, deepforest version, or a source
file's content).  Summary of a build::

    python -m nd_det.data.embedded --root DIR
"""
import argparse
import hashlib
import json
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nd_det.errors import DataError
from nd_det.utils.atomic_file import atomic_write_json
from .atomic_build import build_atomically
from .deepforest_source import (AnnotatedImage, deepforest_version, read_deepforest_images)
from .tiling import Tile, boxes_in_tile, tile_grid

__all__ = ["TRAIN_NAME", "VAL_NAME", "CLASS_NAME", "EmbeddedDataset", "default_embedded_root",
           "ensure_embedded_dataset", "register_embedded_dataset", "summarize_embedded_dataset"]

TRAIN_NAME = "deepforest_trees_train"
VAL_NAME = "deepforest_trees_val"
CLASS_NAME = "tree"
FOLDER_NAME = "deepforest_trees"
# Bump when the build's output changes for the same inputs: old caches are then rebuilt.
BUILD_FORMAT_VERSION = 1
TILE_SIZE = 400
MIN_EDGE_TILE = 100
MIN_VISIBLE_FRACTION = 0.4
MIN_BOX_SIDE = 4
VAL_PERIOD = 5
VAL_RESIDUE = 2
STAMP_FILE = "build_stamp.json"
SPLIT_FILES = {"train": "train.json", "val": "val.json"}
IMAGE_DIR = "images"


@dataclass(frozen=True)
class EmbeddedDataset:
    """The files of a built embedded dataset."""

    root: Path
    image_dir: Path
    train_json: Path
    val_json: Path


def default_embedded_root() -> Path:
    """Where the embedded dataset is cached when no root is given (see the module docstring)."""
    data_home = os.environ.get("ND_DET_DATA")
    if data_home:
        return Path(data_home).expanduser() / FOLDER_NAME
    checkout = Path(__file__).resolve().parents[3]  # projects/nd_demo/embedded/ -> the checkout
    if (checkout / "setup.py").is_file() and (checkout / "nd_det").is_dir():
        return checkout / "datasets" / FOLDER_NAME
    return Path.home() / ".cache" / "nd_det" / FOLDER_NAME


def split_of(tile: Tile, whole_image: bool) -> str:
    """'val' for one tile in VAL_PERIOD of each large image (the lattice (r + 2c) mod 5 == 2),
    'train' for the others and for images kept whole."""
    if not whole_image and (tile.row + 2 * tile.col) % VAL_PERIOD == VAL_RESIDUE:
        return "val"
    return "train"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(sources: List[AnnotatedImage]) -> Dict:
    return {
        "build_format_version": BUILD_FORMAT_VERSION,
        "deepforest_version": deepforest_version(),
        "tile_size": TILE_SIZE,
        "min_edge_tile": MIN_EDGE_TILE,
        "min_visible_fraction": MIN_VISIBLE_FRACTION,
        "min_box_side": MIN_BOX_SIDE,
        "val_rule": f"(row + 2 * col) % {VAL_PERIOD} == {VAL_RESIDUE}",
        "sources": {source.xml_path.name: {"xml_sha256": _sha256(source.xml_path),
                                           "image": source.image_path.name,
                                           "image_sha256": _sha256(source.image_path)}
                    for source in sources},
    }


def _is_current(root: Path, stamp: Dict) -> bool:
    """True when ``root`` holds a complete build made from the same inputs and parameters."""
    try:
        with open(root / STAMP_FILE, encoding="utf-8") as stream:
            if json.load(stream) != stamp:
                return False
        for split_file in SPLIT_FILES.values():
            with open(root / split_file, encoding="utf-8") as stream:
                images = json.load(stream)["images"]
            if not all((root / IMAGE_DIR / image["file_name"]).is_file() for image in images):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _build(staging: Path, sources: List[AnnotatedImage], stamp: Dict) -> None:
    from PIL import Image

    image_dir = staging / IMAGE_DIR
    image_dir.mkdir()
    splits = {name: {"images": [], "annotations": []} for name in SPLIT_FILES}
    next_image_id, next_annotation_id = 1, 1
    for source in sources:
        with Image.open(source.image_path) as opened:
            picture = opened.convert("RGB")
        if picture.size != (source.width, source.height):
            raise DataError(f"{source.xml_path} says {source.width}x{source.height} but "
                               f"{source.image_path} is {picture.size[0]}x{picture.size[1]}. "
                               "Fix: reinstall deepforest (bash scripts/setup_env.sh)")
        tiles = tile_grid(source.width, source.height, TILE_SIZE, MIN_EDGE_TILE)
        whole = len(tiles) == 1
        stem = source.image_path.stem
        for tile in tiles:
            file_name = f"{stem}.png" if whole else f"{stem}_r{tile.row:02d}_c{tile.col:02d}.png"
            picture.crop(tile.window).save(image_dir / file_name, compress_level=1)
            split = splits[split_of(tile, whole)]
            split["images"].append({
                "id": next_image_id, "file_name": file_name,
                "width": tile.width, "height": tile.height,
                "source": source.image_path.name, "window": list(tile.window),
            })
            for box_index, (x0, y0, x1, y1) in boxes_in_tile(source.boxes, tile,
                                                              MIN_VISIBLE_FRACTION, MIN_BOX_SIDE):
                split["annotations"].append({
                    "id": next_annotation_id, "image_id": next_image_id, "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0, "source_label": source.labels[box_index],
                })
                next_annotation_id += 1
            next_image_id += 1
    for name, content in splits.items():
        document = {
            "info": {"description": f"deepforest tree crowns ({name} split), tiled by nd-det "
                                    f"(build format {BUILD_FORMAT_VERSION})",
                     "source": "data files of the PyPI package deepforest (MIT licence)"},
            "licenses": [{"id": 1, "name": "MIT", "url": "https://opensource.org/licenses/MIT"}],
            **content,
            "categories": [{"id": 1, "name": CLASS_NAME, "supercategory": "plant"}],
        }
        atomic_write_json(document, str(staging / SPLIT_FILES[name]))
    atomic_write_json(stamp, str(staging / STAMP_FILE), sort_keys=True)


def ensure_embedded_dataset(root=None, force: bool = False) -> EmbeddedDataset:
    """Build the embedded dataset under ``root`` unless an up-to-date build is there; its files.

    ``force=True`` rebuilds even when the cache looks current.
    """
    root = default_embedded_root() if root is None else Path(root).expanduser()
    root = root.resolve()
    sources = read_deepforest_images()
    stamp = _stamp(sources)
    build_atomically(root, lambda folder: (not force) and _is_current(folder, stamp),
                     lambda staging: _build(staging, sources, stamp))
    return EmbeddedDataset(root=root, image_dir=root / IMAGE_DIR,
                           train_json=root / SPLIT_FILES["train"],
                           val_json=root / SPLIT_FILES["val"])


def register_embedded_dataset(root=None) -> Tuple[str, str]:
    """Build (if needed) and register the embedded dataset; returns (train name, val name).

    The names are ``deepforest_trees_train`` / ``deepforest_trees_val``; registering again (e.g.
    with another root) replaces the earlier registration of these names.
    """
    from nd_det.data import register_coco_dataset

    dataset = ensure_embedded_dataset(root)
    register_coco_dataset(TRAIN_NAME, dataset.train_json, dataset.image_dir, replace=True)
    register_coco_dataset(VAL_NAME, dataset.val_json, dataset.image_dir, replace=True)
    return TRAIN_NAME, VAL_NAME


def summarize_embedded_dataset(dataset: EmbeddedDataset) -> Dict[str, Dict]:
    """Per split: tiles, boxes, tiles without boxes, median box side (px), tiles per source."""
    summary = {}
    for split, path in (("train", dataset.train_json), ("val", dataset.val_json)):
        with open(path, encoding="utf-8") as stream:
            coco = json.load(stream)
        with_boxes = {annotation["image_id"] for annotation in coco["annotations"]}
        sides = [max(a["bbox"][2], a["bbox"][3]) for a in coco["annotations"]]
        per_source = dict(Counter(image["source"] for image in coco["images"]))
        summary[split] = {
            "tiles": len(coco["images"]),
            "boxes": len(coco["annotations"]),
            "tiles_without_boxes": len(coco["images"]) - len(with_boxes),
            "median_box_side_px": statistics.median(sides) if sides else 0,
            "tiles_per_source": per_source,
        }
    return summary


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nd_det.data.embedded",
        description="Build (if needed) the embedded deepforest tree-crown dataset and print a "
                    "summary of its splits.")
    parser.add_argument("--root", default=None,
                        help=f"dataset folder (default: {default_embedded_root()})")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if it is current")
    args = parser.parse_args(argv)
    try:
        dataset = ensure_embedded_dataset(args.root, force=args.rebuild)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"embedded dataset in {dataset.root}")
    print(f"{'split':6} {'tiles':>6} {'boxes':>6} {'empty':>6} {'median side':>12}  tiles per source")
    for split, row in summarize_embedded_dataset(dataset).items():
        sources = ", ".join(f"{name}: {count}" for name, count in row["tiles_per_source"].items())
        print(f"{split:6} {row['tiles']:6d} {row['boxes']:6d} {row['tiles_without_boxes']:6d} "
              f"{row['median_box_side_px']:10.1f}px  {sources}")


if __name__ == "__main__":
    main()
