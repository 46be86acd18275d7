"""Dataset registration for nd-det: COCO-format datasets by path (checked first) and the embedded
offline tree-crown dataset.

- ``register_coco_dataset(name, json_file, image_root)``: validate, then register with detectron2;
- ``validate_coco_json(json_file, image_root)``: the checks alone; raises ``DataError``;
- ``register_embedded_dataset(root=None)`` -> ("deepforest_trees_train", "deepforest_trees_val").
"""
from .coco_paths import register_coco_dataset
from .coco_validation import BOX_TOLERANCE_PX, CocoSummary, validate_coco_json
from .embedded import (EmbeddedDataset, default_embedded_root, ensure_embedded_dataset,
                       register_embedded_dataset)

__all__ = [
    "register_coco_dataset",
    "validate_coco_json", "CocoSummary", "BOX_TOLERANCE_PX",
    "register_embedded_dataset", "ensure_embedded_dataset", "default_embedded_root",
    "EmbeddedDataset",
]
