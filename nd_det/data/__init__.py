"""Datasets for nd-det: COCO-format files by path, read once and checked as they are read
(:mod:`.coco`); every image decoded once before any model is built (:mod:`.image_scan`).

- ``register_coco_dataset(name, json_file, image_root)``: read, check, register with detectron2;
- ``load_coco_records(json_file, image_root)``: detectron2's records of the file, checked.
"""

from .coco import BOX_TOLERANCE_PX, load_coco_records, register_coco_dataset

__all__ = ["register_coco_dataset", "load_coco_records", "BOX_TOLERANCE_PX"]
