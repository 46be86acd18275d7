"""Register a COCO-format dataset (a JSON + an image folder) with detectron2, checked first.

Underneath it is detectron2's own ``register_coco_instances`` / ``load_coco_json``: the records,
the contiguous class ids and the metadata ``COCOEvaluator`` needs (``json_file``,
``evaluator_type="coco"``) are exactly detectron2's.  What this module adds:

- :func:`register_coco_dataset` runs :func:`~nd_det.data.coco_validation.validate_coco_json`
  first (one clear error instead of a KeyError an hour into training; every image decoded once,
  :mod:`~nd_det.data.image_scan`), stores ``thing_classes``
  and ``thing_dataset_id_to_contiguous_id`` in the metadata at once (the same values detectron2
  computes when it loads the JSON), and lets the same name be registered again with the same files
  (it is checked and registered afresh; another name's files need ``replace=True``);

Category ids that are not ``1..K`` are legal: detectron2 maps the sorted ids to ``0..K-1``.
Images without boxes stay in the records; training drops them when
``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True (detectron2's default).
"""

import logging
import os
from typing import Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..errors import DataError
from .coco_validation import CocoSummary, validate_coco_json
from .image_scan import SCANNED_KEY

__all__ = ["register_coco_dataset"]

logger = logging.getLogger(__name__)


def _registered_files(name: str) -> Optional[tuple[str, str]]:
    metadata = MetadataCatalog.get(name)
    json_file = getattr(metadata, "json_file", None)
    image_root = getattr(metadata, "image_root", None)
    if json_file is None or image_root is None:
        return None
    return os.fspath(json_file), os.fspath(image_root)


def register_coco_dataset(
    name: str, json_file, image_root, replace: bool = False, degenerate_boxes: str = "error"
) -> CocoSummary:
    """Check (:func:`validate_coco_json`, which raises :class:`DataError` on the first
    problem), then register a COCO-format instances dataset under ``name`` (the name used in
    ``DATASETS.TRAIN`` / ``DATASETS.TEST``); ``image_root`` is the folder the JSON's
    ``file_name`` entries are relative to.  ``replace``: if ``name`` is already registered with
    other files, replace that registration (default: raise).  ``degenerate_boxes`` is passed
    to :func:`validate_coco_json`.  Returns its summary."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise DataError(
            f"dataset name {name!r} is not usable. Fix: pass a non-empty name "
            "without surrounding spaces, e.g. 'trees_train'"
        )
    json_file = os.path.abspath(os.path.expanduser(os.fspath(json_file)))
    image_root = os.path.abspath(os.path.expanduser(os.fspath(image_root)))
    if name in DatasetCatalog.list():
        registered = _registered_files(name)
        if registered != (json_file, image_root) and not replace:
            where = f"{registered[0]} and {registered[1]}" if registered else "another loader"
            raise DataError(
                f"dataset name '{name}' is already registered (with {where}). "
                "Fix: give --dataset another name for "
                f"{json_file} (in Python: replace=True re-registers it)"
            )
    summary = validate_coco_json(json_file, image_root, degenerate_boxes=degenerate_boxes)
    if DatasetCatalog.pop(name, None) is not None:  # a name registered before: replaced whole
        MetadataCatalog.pop(name, None)
    register_coco_instances(name, {}, json_file, image_root)
    MetadataCatalog.get(name).set(
        thing_classes=list(summary.class_names),
        thing_dataset_id_to_contiguous_id=summary.dataset_id_to_contiguous_id,
        **{SCANNED_KEY: True},  # validate_coco_json scanned its images
    )
    logger.info(
        "registered dataset '%s': %d images, %d boxes, %d classes (%s), %d images without boxes",
        name,
        summary.num_images,
        summary.num_annotations,
        summary.num_classes,
        ", ".join(summary.class_names[:10]),
        summary.num_images_without_boxes,
    )
    return summary
