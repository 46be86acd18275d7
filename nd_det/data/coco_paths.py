"""Register a COCO-format dataset (a JSON + an image folder) with detectron2, checked first.

Underneath it is detectron2's own ``register_coco_instances`` / ``load_coco_json``: the records,
the contiguous class ids and the metadata ``COCOEvaluator`` needs (``json_file``,
``evaluator_type="coco"``) are exactly detectron2's.  What this module adds:

- :func:`register_coco_dataset` runs :func:`~nd_det.data.coco_validation.validate_coco_json`
  first (one clear error instead of a KeyError an hour into training), stores ``thing_classes``
  and ``thing_dataset_id_to_contiguous_id`` in the metadata at once (the same values detectron2
  computes when it loads the JSON), and lets the same name be registered again with the same files
  (it is checked and registered afresh; another name's files need ``replace=True``);
- :func:`parse_dataset_spec` reads ``NAME=JSON:IMAGE_DIR`` from a command line;
- :func:`num_classes_of` answers how many classes a registered dataset has.

Category ids that are not ``1..K`` are legal: detectron2 maps the sorted ids to ``0..K-1``.
Images without boxes stay in the records; training drops them when
``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True (detectron2's default).
"""
import json
import logging
import os
from typing import Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .coco_validation import CocoSummary, validate_coco_json
from .errors import DatasetError

__all__ = ["register_coco_dataset", "parse_dataset_spec", "num_classes_of"]

logger = logging.getLogger(__name__)


def _registered_files(name: str) -> Optional[Tuple[str, str]]:
    metadata = MetadataCatalog.get(name)
    json_file = getattr(metadata, "json_file", None)
    image_root = getattr(metadata, "image_root", None)
    if json_file is None or image_root is None:
        return None
    return os.fspath(json_file), os.fspath(image_root)


def _forget(name: str) -> None:
    DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_coco_dataset(name: str, json_file, image_root, validate: bool = True,
                          replace: bool = False, decode_images: bool = False,
                          degenerate_boxes: str = "error") -> Optional[CocoSummary]:
    """Register a COCO-format instances dataset under ``name`` in detectron2's catalogs.

    Args:
        name: the dataset name used in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
        json_file: the COCO instances JSON.
        image_root: the folder the JSON's ``file_name`` entries are relative to.
        validate: check the JSON and that the image files exist before registering (fast; see
            :func:`validate_coco_json`); raises :class:`DatasetError` on the first problem.
        replace: if ``name`` is already registered with other files, replace that registration
            (default: raise).  The same name with the same files is always re-registered.
        decode_images, degenerate_boxes: passed to :func:`validate_coco_json`.

    Returns:
        the validation summary (None when ``validate`` is False).
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise DatasetError(f"dataset name {name!r} is not usable. Fix: pass a non-empty name "
                           "without surrounding spaces, e.g. 'trees_train'")
    json_file = os.path.abspath(os.path.expanduser(os.fspath(json_file)))
    image_root = os.path.abspath(os.path.expanduser(os.fspath(image_root)))
    if name in DatasetCatalog.list():
        registered = _registered_files(name)
        if registered != (json_file, image_root) and not replace:
            where = f"{registered[0]} and {registered[1]}" if registered else "another loader"
            raise DatasetError(f"dataset name '{name}' is already registered (with {where}). "
                               "Fix: choose another name for "
                               f"{json_file}, or pass replace=True to re-register it")
    summary = None
    if validate:
        summary = validate_coco_json(json_file, image_root, decode_images=decode_images,
                                     degenerate_boxes=degenerate_boxes)
    if name in DatasetCatalog.list():
        _forget(name)
    register_coco_instances(name, {}, json_file, image_root)
    if summary is not None:
        MetadataCatalog.get(name).set(
            thing_classes=list(summary.class_names),
            thing_dataset_id_to_contiguous_id=summary.dataset_id_to_contiguous_id,
        )
        logger.info("registered dataset '%s': %d images, %d boxes, %d classes (%s), %d images "
                    "without boxes", name, summary.num_images, summary.num_annotations,
                    summary.num_classes, ", ".join(summary.class_names[:10]),
                    summary.num_images_without_boxes)
    return summary


def parse_dataset_spec(spec: str) -> Tuple[str, str, str]:
    """Split a command-line ``NAME=JSON:IMAGE_DIR`` into ``(name, json_file, image_root)``.

    Paths containing ':' cannot be written this way; pass the three strings to
    :func:`register_coco_dataset` instead (``--dataset NAME JSON IMAGE_DIR``).
    """
    usage = ("write it as NAME=path/to/annotations.json:path/to/images, e.g. "
             "trees_train=data/train.json:data/images (or give the three values separately: "
             "--dataset NAME JSON IMAGE_DIR)")
    if not isinstance(spec, str) or "=" not in spec:
        raise DatasetError(f"dataset spec {spec!r} has no '='. Fix: {usage}")
    name, _, paths = spec.partition("=")
    parts = paths.split(":")
    if not name.strip() or len(parts) != 2 or not all(part.strip() for part in parts):
        raise DatasetError(f"dataset spec {spec!r} is not NAME=JSON:IMAGE_DIR. Fix: {usage}")
    return name.strip(), parts[0].strip(), parts[1].strip()


def num_classes_of(dataset_name: str) -> int:
    """Number of classes (``len(thing_classes)``) of a registered dataset.

    Reads the metadata; when a COCO-format dataset was registered without validation and not
    loaded yet, reads the categories of its JSON instead of loading every record.
    """
    if dataset_name not in DatasetCatalog.list():
        raise DatasetError(f"dataset '{dataset_name}' is not registered. Fix: register it first "
                           "(register_coco_dataset(name, json_file, image_root), or --dataset "
                           "NAME JSON IMAGE_DIR on the command line)")
    metadata = MetadataCatalog.get(dataset_name)
    classes = getattr(metadata, "thing_classes", None)
    if classes is None and getattr(metadata, "json_file", None) is not None:
        with open(metadata.json_file, "rb") as stream:
            categories = json.load(stream).get("categories", [])
        classes = [category["name"] for category in sorted(categories, key=lambda c: c["id"])]
    if classes is None:
        DatasetCatalog.get(dataset_name)  # loaders registered by hand may set thing_classes
        classes = getattr(metadata, "thing_classes", None)
    if not classes:
        raise DatasetError(f"dataset '{dataset_name}' has no thing_classes in its metadata. Fix: "
                           f"set MetadataCatalog.get('{dataset_name}').thing_classes to its list "
                           "of class names")
    return len(classes)
