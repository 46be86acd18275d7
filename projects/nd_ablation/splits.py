"""The ablation's detection splits of the embedded tree-crown tiles.

The demo puts one tile in five of each large image in val (tile row r, column c with
(r + 2c) mod 5 == 2).  Two more splits are made from the same lattice (still no two held-out
tiles side by side; the two whole 400 x 400 images, row 0 column 0, always train):

- **ablation** (``register_splits``): a larger val share than the demo's, so that one run's val
  AP moves less with the tiles it holds: val = (r + 2c) mod 5 in {2, 4}, two tiles in five.
- **selection** (``register_selection_split``): for choosing the demo's settings without its val
  tiles: the demo's *train* tiles only, the held-out fold (r + 2c) mod 5 == 4, the rest train.
  No demo val tile is in it: what picks the demo's settings is not what reports them.

The COCO files are written into the given folder; the images stay in the embedded dataset's.
"""

import json
import os

from nd_common.embedded import TILE_SIZE, ensure_embedded_dataset

from nd_det.data import register_coco_dataset
from nd_det.utils.atomic_file import atomic_write_json

TRAIN_NAME = "nd_det_ablation_trees_train"
VAL_NAME = "nd_det_ablation_trees_val"
VAL_RESIDUES = (2, 4)
SELECTION_NAMES = ("nd_det_selection_trees_train", "nd_det_selection_trees_heldout")
SELECTION_RESIDUES = (4,)


def _residue(image: dict) -> int:
    x0, y0 = image["window"][:2]
    return (y0 // TILE_SIZE + 2 * (x0 // TILE_SIZE)) % 5


def write_splits(folder: str, dataset_root=None, residues=VAL_RESIDUES, pool=("train", "val")):
    """Write ``train.json`` / ``val.json`` into ``folder``: of the images of the embedded
    splits in ``pool``, those whose tile residue is in ``residues`` are val, the others train."""
    dataset = ensure_embedded_dataset(dataset_root)
    files = {"train": dataset.train_json, "val": dataset.val_json}
    parts = [json.loads(files[name].read_text(encoding="utf-8")) for name in pool]
    header = {k: v for k, v in parts[0].items() if k not in ("images", "annotations")}
    for split, wanted in (("train", False), ("val", True)):
        images = sorted(
            (im for part in parts for im in part["images"] if (_residue(im) in residues) == wanted),
            key=lambda im: im["id"],
        )
        ids = {im["id"] for im in images}
        annotations = sorted(
            (a for part in parts for a in part["annotations"] if a["image_id"] in ids),
            key=lambda a: a["id"],
        )
        atomic_write_json(
            dict(header, images=images, annotations=annotations),
            os.path.join(folder, f"{split}.json"),
        )


def _register(folder, dataset_root, names, residues, pool) -> tuple[str, str]:
    train_json, val_json = os.path.join(folder, "train.json"), os.path.join(folder, "val.json")
    image_dir = str(ensure_embedded_dataset(dataset_root).image_dir)
    if not (os.path.isfile(train_json) and os.path.isfile(val_json)):
        write_splits(folder, dataset_root, residues, pool)
    register_coco_dataset(names[0], train_json, image_dir, replace=True)
    register_coco_dataset(names[1], val_json, image_dir, replace=True)
    return names


def register_splits(folder: str, dataset_root=None) -> tuple[str, str]:
    """Write (if needed) and register the ablation split; returns its two dataset names."""
    return _register(folder, dataset_root, (TRAIN_NAME, VAL_NAME), VAL_RESIDUES, ("train", "val"))


def register_selection_split(folder: str, dataset_root=None) -> tuple[str, str]:
    """Write (if needed) and register the selection split (the demo's train tiles: train and a
    held-out fold); returns its two dataset names."""
    return _register(folder, dataset_root, SELECTION_NAMES, SELECTION_RESIDUES, ("train",))
