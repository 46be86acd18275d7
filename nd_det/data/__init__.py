"""Dataset registration for nd-det: COCO-format datasets by path, checked first.

- ``register_coco_dataset(name, json_file, image_root)``: validate, then register with detectron2;
- ``validate_coco_json(json_file, image_root)``: the checks alone; raises ``DataError``;
"""

from .coco_paths import register_coco_dataset
from .coco_validation import BOX_TOLERANCE_PX, CocoSummary, validate_coco_json

__all__ = [
    "register_coco_dataset",
    "validate_coco_json",
    "CocoSummary",
    "BOX_TOLERANCE_PX",
]
