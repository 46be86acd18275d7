"""The ablation's detection split of the embedded tree-crown tiles: a larger val share than the
demo's, so that the val AP of one run moves less with the tiles it happens to hold.

The demo puts one tile in five of each large image in val (tile row r, column c with
(r + 2c) mod 5 == 2).  The ablation takes two in five ((r + 2c) mod 5 in {2, 4}): the same
lattice, still no two val tiles side by side; every other tile and the two whole 400 x 400
images (row 0, column 0) in train.  The two COCO files are written next to the ablation's
results; the images stay in the embedded dataset's folder.
"""

import json
import os

from nd_common.embedded import TILE_SIZE, ensure_embedded_dataset

from nd_det.data import register_coco_dataset
from nd_det.utils.atomic_file import atomic_write_json

TRAIN_NAME = "nd_det_ablation_trees_train"
VAL_NAME = "nd_det_ablation_trees_val"
VAL_RESIDUES = (2, 4)


def write_splits(folder: str, dataset_root=None) -> None:
    """Write ``train.json`` / ``val.json`` of the ablation split into ``folder``."""
    dataset = ensure_embedded_dataset(dataset_root)
    parts = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in (dataset.train_json, dataset.val_json)
    ]
    header = {k: v for k, v in parts[0].items() if k not in ("images", "annotations")}
    for split, wanted in (("train", False), ("val", True)):
        images = sorted(
            (
                im
                for part in parts
                for im in part["images"]
                if (
                    (im["window"][1] // TILE_SIZE + 2 * (im["window"][0] // TILE_SIZE)) % 5
                    in VAL_RESIDUES
                )
                == wanted
            ),
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


def register_splits(folder: str, dataset_root=None) -> tuple[str, str]:
    """Write (if needed) and register the two splits; returns their dataset names."""
    train_json, val_json = os.path.join(folder, "train.json"), os.path.join(folder, "val.json")
    image_dir = str(ensure_embedded_dataset(dataset_root).image_dir)
    if not (os.path.isfile(train_json) and os.path.isfile(val_json)):
        write_splits(folder, dataset_root)
    register_coco_dataset(TRAIN_NAME, train_json, image_dir, replace=True)
    register_coco_dataset(VAL_NAME, val_json, image_dir, replace=True)
    return TRAIN_NAME, VAL_NAME
