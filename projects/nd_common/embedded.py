"""The embedded dataset: real tree-crown boxes from the deepforest package, as COCO, tiled and
split.

Nothing is downloaded: the airborne RGB images and their hand-drawn boxes ship in the ``data/``
folder of the PyPI package deepforest (MIT licence; ``pip install --no-deps deepforest==2.1.0``
by ``scripts/setup_env.sh``), found with ``importlib.util.find_spec``, which does not import it
(its own requirements are not installed).  The build:

- one class, ``"tree"``: deepforest's labels ``Tree``, ``Dead`` and ``Alive`` all become it (the
  original label is kept in each annotation as ``"source_label"``, which detectron2 ignores);
- images no larger than ``TILE_SIZE`` (OSBS_029, SOAP_061: 400 x 400) are kept whole; the two
  large YELL crops are cut into non-overlapping tiles from the top-left corner (a narrower last
  tile of a row or column is kept from ``MIN_EDGE_TILE`` px); a box crossing tile borders is
  clipped to each tile, and a piece kept when it holds ``MIN_VISIBLE_FRACTION`` of the box's
  area with both sides of ``MIN_BOX_SIDE`` px or more;
- a deterministic split by tile: tile (row r, column c) of a large image is in **val** when
  ``(r + 2 c) mod 5 == 2`` (one tile in five, no two val tiles side by side); every other tile
  and the whole images are in **train**.  Tiles do not overlap: no pixel is in both splits;
- tiles are written as PNG under ``images/`` with ``train.json`` and ``val.json`` (each image
  entry also records its ``"source"`` image and its ``"window"`` [x0, y0, x1, y1] in it) and
  ``build_stamp.json``.

With deepforest 2.1.0 this gives train: 38 tiles / 752 boxes, val: 9 tiles / 197 boxes.  Built
once (in a temporary sibling folder, renamed into place under a lock: a reader never sees a half
build) and rebuilt when a file is missing or the stamp differs (build format, parameters,
deepforest version, a source file's content).  Summary of a build::

    PYTHONPATH=projects python -m nd_common.embedded [--root DIR] [--rebuild]
"""

import argparse
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import shutil
import statistics
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fvcore.common.file_io import file_lock

from nd_det.errors import DataError
from nd_det.utils.atomic_file import atomic_write_json

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
SETUP_FIX = (
    "run `bash scripts/setup_env.sh` from the repository root (it installs it), or "
    "`pip install --no-deps deepforest==2.1.0` in this Python environment"
)


@dataclass(frozen=True)
class EmbeddedDataset:
    """The files of a built embedded dataset."""

    root: Path
    image_dir: Path
    train_json: Path
    val_json: Path


def default_embedded_root() -> Path:
    """``$ND_DET_DATA/deepforest_trees`` when ND_DET_DATA is set (like detectron2's
    DETECTRON2_DATASETS), else ``<checkout>/datasets/deepforest_trees`` in a source checkout
    (git-ignored), else ``~/.cache/nd_det/deepforest_trees``."""
    data_home = os.environ.get("ND_DET_DATA")
    if data_home:
        return Path(data_home).expanduser() / FOLDER_NAME
    checkout = Path(__file__).resolve().parents[2]  # projects/nd_common/ -> the checkout
    if (checkout / "setup.py").is_file() and (checkout / "nd_det").is_dir():
        return checkout / "datasets" / FOLDER_NAME
    return Path.home() / ".cache" / "nd_det" / FOLDER_NAME


# ---------------------------------------------------------------- the source: deepforest's data
def deepforest_data_dir() -> Path:
    """The ``data`` folder of the installed deepforest package (the package is not imported)."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the embedded tree-crown dataset needs the data files of the PyPI "
            "package deepforest==2.1.0, which is not installed in this Python. "
            f"Fix: {SETUP_FIX}"
        )
    for location in spec.submodule_search_locations:
        if (Path(location) / "data").is_dir():
            return Path(location) / "data"
    raise DataError(
        f"the deepforest package at {list(spec.submodule_search_locations)} has no "
        f"data/ folder. Fix: reinstall it: {SETUP_FIX}"
    )


def _sources() -> list[tuple[Path, Path, list[tuple[int, ...]], list[str]]]:
    """(xml, image, boxes (x0, y0, x1, y1), labels) of every Pascal-VOC file of deepforest's data
    folder, by file name (the images without one, e.g. SOAP_031.png, are not used)."""
    data_dir = deepforest_data_dir()
    sources = []
    for xml_path in sorted(p for p in data_dir.iterdir() if p.suffix.lower() == ".xml"):
        try:
            root = ElementTree.parse(xml_path).getroot()
            boxes = [
                tuple(
                    int(round(float(obj.findtext(f"bndbox/{key}"))))
                    for key in ("xmin", "ymin", "xmax", "ymax")
                )
                for obj in root.iter("object")
            ]
        except (OSError, ElementTree.ParseError, TypeError, ValueError) as error:
            raise DataError(
                f"{xml_path}: not a readable Pascal-VOC file ({error}). Fix: "
                f"reinstall deepforest ({SETUP_FIX})"
            ) from error
        image_path = xml_path.parent / (root.findtext("filename") or "").strip()
        if not image_path.is_file():
            raise DataError(
                f"{xml_path} names the image {image_path.name}, which is not in "
                f"{data_dir}. Fix: reinstall deepforest ({SETUP_FIX})"
            )
        labels = [(obj.findtext("name") or "").strip() for obj in root.iter("object")]
        sources.append((xml_path, image_path, boxes, labels))
    if not sources:
        raise DataError(
            f"no Pascal-VOC .xml file in {data_dir}. Fix: reinstall deepforest ({SETUP_FIX})"
        )
    return sources


# ---------------------------------------------------------------- the build
def _spans(length: int) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one side: TILE_SIZE px each from 0, the last one narrower
    where ``length`` is not a multiple of it, and then kept from MIN_EDGE_TILE px."""
    return [
        (start, min(start + TILE_SIZE, length))
        for start in range(0, length, TILE_SIZE)
        if start == 0 or length - start >= MIN_EDGE_TILE
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(sources) -> dict:
    try:
        version = importlib.metadata.version("deepforest")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "build_format_version": BUILD_FORMAT_VERSION,
        "deepforest_version": version,
        "tile_size": TILE_SIZE,
        "min_edge_tile": MIN_EDGE_TILE,
        "min_visible_fraction": MIN_VISIBLE_FRACTION,
        "min_box_side": MIN_BOX_SIDE,
        "val_rule": f"(row + 2 * col) % {VAL_PERIOD} == {VAL_RESIDUE}",
        "sources": {
            xml.name: {
                "xml_sha256": _sha256(xml),
                "image": image.name,
                "image_sha256": _sha256(image),
            }
            for xml, image, _, _ in sources
        },
    }


def _is_current(root: Path, stamp: dict) -> bool:
    """True when ``root`` holds a complete build made from the same inputs and parameters."""
    try:
        if json.loads((root / STAMP_FILE).read_text(encoding="utf-8")) != stamp:
            return False
        return all(
            (root / IMAGE_DIR / image["file_name"]).is_file()
            for split_file in SPLIT_FILES.values()
            for image in json.loads((root / split_file).read_text(encoding="utf-8"))["images"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build(staging: Path, sources, stamp: dict) -> None:
    from PIL import Image

    image_dir = staging / IMAGE_DIR
    image_dir.mkdir()
    splits = {name: {"images": [], "annotations": []} for name in SPLIT_FILES}
    image_ids, annotation_ids = itertools.count(1), itertools.count(1)
    for _, image_path, boxes, labels in sources:
        with Image.open(image_path) as opened:
            picture = opened.convert("RGB")
        width, height = picture.size
        # boxes clipped to the image, empty ones dropped
        clipped = [
            ((max(0, x0), max(0, y0), min(width, x1), min(height, y1)), label)
            for (x0, y0, x1, y1), label in zip(boxes, labels)
        ]
        clipped = [(b, label) for b, label in clipped if b[2] > b[0] and b[3] > b[1]]
        rows, cols = _spans(height), _spans(width)
        whole = len(rows) == len(cols) == 1
        for (row, (ty0, ty1)), (col, (tx0, tx1)) in itertools.product(
            enumerate(rows), enumerate(cols)
        ):
            name = (
                f"{image_path.stem}.png"
                if whole
                else f"{image_path.stem}_r{row:02d}_c{col:02d}.png"
            )
            picture.crop((tx0, ty0, tx1, ty1)).save(image_dir / name, compress_level=1)
            is_val = not whole and (row + 2 * col) % VAL_PERIOD == VAL_RESIDUE
            split = splits["val" if is_val else "train"]
            image_id = next(image_ids)
            split["images"].append(
                {
                    "id": image_id,
                    "file_name": name,
                    "width": tx1 - tx0,
                    "height": ty1 - ty0,
                    "source": image_path.name,
                    "window": [tx0, ty0, tx1, ty1],
                }
            )
            for (x0, y0, x1, y1), label in clipped:
                cx0, cy0, cx1, cy1 = max(x0, tx0), max(y0, ty0), min(x1, tx1), min(y1, ty1)
                w, h = cx1 - cx0, cy1 - cy0
                if min(w, h) < MIN_BOX_SIDE or (
                    w * h < MIN_VISIBLE_FRACTION * (x1 - x0) * (y1 - y0)
                ):
                    continue
                split["annotations"].append(
                    {
                        "id": next(annotation_ids),
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": [cx0 - tx0, cy0 - ty0, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "source_label": label,
                    }
                )
    for name, content in splits.items():
        document = {
            "info": {
                "description": f"deepforest tree crowns ({name} split), tiled by nd-det "
                f"(build format {BUILD_FORMAT_VERSION})",
                "source": "data files of the PyPI package deepforest (MIT licence)",
            },
            "licenses": [{"id": 1, "name": "MIT", "url": "https://opensource.org/licenses/MIT"}],
            **content,
            "categories": [{"id": 1, "name": CLASS_NAME, "supercategory": "plant"}],
        }
        atomic_write_json(document, str(staging / SPLIT_FILES[name]))
    atomic_write_json(stamp, str(staging / STAMP_FILE), sort_keys=True)


def ensure_embedded_dataset(root=None, force: bool = False) -> EmbeddedDataset:
    """Build the embedded dataset under ``root`` unless an up-to-date build is there (``force``:
    rebuild anyway); its files.  Processes building the same folder take turns through the lock
    file ``.<name>.lock`` beside it (fvcore's ``file_lock``, as detectron2 locks its cached COCO
    conversions); leftovers of a killed build are deleted by the next build."""
    root = (default_embedded_root() if root is None else Path(root).expanduser()).resolve()
    sources = _sources()
    stamp = _stamp(sources)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(str(root.parent / f".{root.name}")):
        if force or not (root.is_dir() and _is_current(root, stamp)):
            for leftover in [
                *root.parent.glob(f".{root.name}.building-*"),
                *root.parent.glob(f".{root.name}.old-*"),
            ]:
                shutil.rmtree(leftover, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
            try:
                _build(staging, sources, stamp)
                if root.exists():  # the out-of-date build is renamed aside, then deleted
                    old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                    os.rename(root, old / root.name)
                    os.rename(staging, root)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(staging, root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return EmbeddedDataset(
        root=root,
        image_dir=root / IMAGE_DIR,
        train_json=root / SPLIT_FILES["train"],
        val_json=root / SPLIT_FILES["val"],
    )


def register_embedded_dataset(root=None) -> tuple[str, str]:
    """Build (if needed) and register the embedded dataset (again: the new registration replaces
    the earlier one); returns (train name, val name)."""
    from nd_det.data import register_coco_dataset

    dataset = ensure_embedded_dataset(root)
    register_coco_dataset(TRAIN_NAME, dataset.train_json, dataset.image_dir, replace=True)
    register_coco_dataset(VAL_NAME, dataset.val_json, dataset.image_dir, replace=True)
    return TRAIN_NAME, VAL_NAME


def main(argv: Optional[list[str]] = None) -> None:
    """Build (if needed) and print per split: tiles, boxes, tiles without boxes, median box
    side, tiles per source."""
    parser = argparse.ArgumentParser(
        prog="python -m nd_common.embedded",
        description="Build (if needed) the embedded deepforest tree-crown dataset and print a "
        "summary of its splits.",
    )
    parser.add_argument(
        "--root", default=None, help=f"dataset folder (default: {default_embedded_root()})"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if it is current")
    args = parser.parse_args(argv)
    try:
        dataset = ensure_embedded_dataset(args.root, force=args.rebuild)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"embedded dataset in {dataset.root}")
    print(
        f"{'split':6} {'tiles':>6} {'boxes':>6} {'empty':>6} {'median side':>12}  tiles per source"
    )
    for split, path in (("train", dataset.train_json), ("val", dataset.val_json)):
        coco = json.loads(path.read_text(encoding="utf-8"))
        empty = len(coco["images"]) - len({a["image_id"] for a in coco["annotations"]})
        sides = [max(a["bbox"][2], a["bbox"][3]) for a in coco["annotations"]]
        sources = ", ".join(
            f"{name}: {count}"
            for name, count in Counter(image["source"] for image in coco["images"]).items()
        )
        print(
            f"{split:6} {len(coco['images']):6d} {len(coco['annotations']):6d} {empty:6d} "
            f"{statistics.median(sides) if sides else 0:10.1f}px  {sources}"
        )


if __name__ == "__main__":
    main()
