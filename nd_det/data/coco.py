"""COCO-format datasets by path: the JSON read once, checked in the same pass, registered with
detectron2.

:func:`load_coco_records` parses an instances JSON one time and returns detectron2's dataset
records, equal to what ``detectron2.data.datasets.load_coco_json(json_file, image_root, name)``
returns for it (the tests compare them on every form COCO allows and on fuzzed files: crowd RLE,
polygons, empty segmentation lists, non-contiguous category ids, images without boxes, extra
fields).  On the way it refuses, as one :class:`~nd_det.errors.DataError` naming the file and the
entry, what detectron2 refuses when it loads the file and what it would only find when a loader
reaches the annotation, hours into training:

* an entry that is not what COCO's format says (a missing key, a value of another type);
* an image or category id listed twice (detectron2 would keep one of them silently), an
  annotation id listed twice (detectron2 asserts it, except in files named ``*minival*``), an
  ``ignore`` flag, a ``category_id`` that ``categories`` does not list;
* a box that is not four finite numbers, lies outside its image by more than
  ``BOX_TOLERANCE_PX`` pixels, or has no area (``degenerate_boxes="warn"``: logged; detectron2
  drops such boxes when it builds training targets; COCO's train2017 holds two);
* an image that does not decode, or whose size is not the JSON's: every image is read once,
  last, by :func:`~nd_det.data.image_scan.scan_images` (cached between runs).

What COCO allows is kept as detectron2 keeps it, and logged: images without boxes (training
drops them under ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``), category ids that are not ``1..K``
(mapped in sorted order to ``0..K-1``), annotations of image ids not in ``images`` (ignored).

:func:`register_coco_dataset` registers the records under a name: the first
``DatasetCatalog.get`` of it in this process returns the records already read (a training
process parses the JSON once); a later one reads the file again with detectron2's
``load_coco_json``.
"""

import contextlib
import gc
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from ..errors import DataError
from ..utils.text import first_line, short_list
from .image_scan import SCANNED_KEY, scan_images

__all__ = ["BOX_TOLERANCE_PX", "load_coco_records", "register_coco_dataset"]

logger = logging.getLogger(__name__)

# how far (pixels) a box may reach past its image's border: converters' rounding often leaves
# x + width a pixel past it; detectron2 clips such boxes when it loads them
BOX_TOLERANCE_PX = 2.0
_ANN_KEYS = ("iscrowd", "bbox", "keypoints", "category_id")  # what detectron2 keeps of an entry
_FORMAT = (
    "COCO's instances format: 'images' [{id, file_name, height, width}], 'annotations' [{id, "
    "image_id, category_id, bbox: [x, y, width, height]}], 'categories' [{id, name}]"
)


class _Bad(Exception):
    """Why one entry cannot be used (the reader names the file and the entry)."""


class _CategoryIds(dict):
    def __missing__(self, key):
        raise _Bad(f" has category_id {key!r}, which 'categories' does not list")


def _entry(item) -> str:
    """``"annotation id 7"`` for the entry the reader was at (``item``: a text, or a kind and
    the entry); the reasons continue it (" has ...")."""
    if isinstance(item, str):
        return item
    kind, entry = item
    return (
        f"{kind} id {entry['id']!r}"
        if isinstance(entry, dict) and "id" in entry
        else (f"{kind} {entry!r:.60}")
    )


@contextlib.contextmanager
def _gc_paused():
    """Python's cycle collector off while the reader builds millions of objects without cycles
    (each of its passes would walk all of them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_coco_records(json_file, image_root, degenerate_boxes: str = "error") -> list[dict]:
    """detectron2's records of a COCO instances JSON (category ids made contiguous), checked as
    the module docstring says; ``image_root``: the folder the ``file_name`` entries are relative
    to.  Raises one DataError naming the file and the entry."""
    return _read(json_file, image_root, degenerate_boxes)[0]


def _read(json_file, image_root, degenerate_boxes: str) -> tuple[list[dict], dict]:
    """(records, {category id: name}) of :func:`load_coco_records`."""
    with _gc_paused():
        return _read_once(os.fspath(json_file), os.fspath(image_root), degenerate_boxes)


def _read_once(json_file: str, image_root: str, degenerate_boxes: str):
    try:
        with open(json_file, "rb") as stream:
            data = json.loads(stream.read())
    except (OSError, ValueError) as e:  # missing, unreadable, not JSON
        raise DataError(
            f"{json_file} is not valid JSON or cannot be read ({first_line(e)})"
        ) from None
    item = "the top level"  # what the reader is at, named when it is malformed
    try:
        categories, images = data["categories"], data["images"]
        item = "'categories'"
        names = {cat["id"]: cat["name"] for cat in categories}
        if len(names) != len(categories) or not names:
            raise _Bad(" list a category id twice" if names else " list no category")
        id_map = _CategoryIds((cat_id, i) for i, cat_id in enumerate(sorted(names)))
        item = "'images'"
        groups = {image["id"]: (image, []) for image in images}
        if len(groups) != len(images):
            raise _Bad(" list an image id twice")
        image_ids = sorted(groups)
        orphans = 0
        for anno in data.get("annotations", []):  # indexed as pycocotools indexes them
            item = ("annotation", anno)
            group, _, _ = groups.get(anno["image_id"]), hash(anno["id"]), hash(anno["category_id"])
            if group is None:
                orphans += 1
            else:
                group[1].append(anno)
        item = "'annotations'"
        ids = [anno["id"] for image_id in image_ids for anno in groups[image_id][1]]
        if len(set(ids)) != len(ids) and "minival" not in json_file:  # as detectron2 asserts
            raise _Bad(" list an annotation id twice")
        records, kept, boxes, positions, no_segmentation = [], [], [], [], 0
        for image_id in image_ids:
            image, annos = groups[image_id]
            item = ("image", image)
            record = {
                "file_name": os.path.join(image_root, image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": image_id,
                "annotations": [],
            }
            for anno in annos:  # detectron2's reading of an annotation, step by step
                item = ("annotation", anno)
                if anno.get("ignore", 0) != 0:
                    raise _Bad(' has an "ignore" flag, which detectron2 does not support')
                obj = {key: anno[key] for key in _ANN_KEYS if key in anno}
                segm = anno.get("segmentation", None)
                if segm:
                    if isinstance(segm, dict):
                        if isinstance(segm["counts"], list):
                            segm = mask_util.frPyObjects(segm, *segm["size"])
                    else:
                        segm = [poly for poly in segm if len(poly) % 2 == 0 and len(poly) >= 6]
                        if not segm:
                            no_segmentation += 1
                            continue
                    obj["segmentation"] = segm
                keypoints = anno.get("keypoints", None)
                if keypoints:  # pixel indices to coordinates
                    for i, value in enumerate(keypoints):
                        if i % 3 != 2:
                            keypoints[i] = value + 0.5
                    obj["keypoints"] = keypoints
                obj["bbox_mode"] = BoxMode.XYWH_ABS
                obj["category_id"] = id_map[obj["category_id"]]
                kept.append(anno)
                boxes.append(anno["bbox"])
                positions.append(len(records))
                record["annotations"].append(obj)
            records.append(record)
        xywh = _box_array(boxes)  # (N, 4) numbers, or None
        if xywh is None or not np.isfinite(xywh).all():
            item = (
                "annotation",
                kept[next((i for i, box in enumerate(boxes) if not _is_box(box)), 0)],
            )
            raise _Bad(f" has bbox {item[1]['bbox']!r:.60}, not four finite numbers [x, y, w, h]")
        x, y, w, h = xywh.T
        flat = (w <= 0) | (h <= 0)  # detectron2 drops such boxes from training
        if flat.any() and degenerate_boxes != "warn":
            item = ("annotation", kept[int(np.argmax(flat))])
            why = f" has a box with zero or negative width or height ({flat.sum()} in all)"
            raise _Bad(f"{why}: check it, or train without such boxes: --allow-degenerate-boxes")
        width, height = _image_sizes(records, positions)
        tol = BOX_TOLERANCE_PX
        far = ~flat & ((x < -tol) | (y < -tol) | (x + w > width + tol) | (y + h > height + tol))
        if far.any():
            i = int(np.argmax(far))
            item, record = ("annotation", kept[i]), records[positions[i]]
            raise _Bad(
                f": box [x, y, width, height] = {boxes[i]} lies outside its image "
                f"{record['file_name']} ({record['width']} x {record['height']}) by > {tol:g} px"
            )
    except (_Bad, LookupError, TypeError, ValueError, AttributeError) as e:
        reason = str(e) if isinstance(e, _Bad) else f" is malformed ({first_line(e)}); {_FORMAT}"
        raise DataError(f"{json_file}: {_entry(item)}{reason}") from None
    scan_images(records, json_file)
    _log(json_file, records, orphans, int(flat.sum()), no_segmentation, list(id_map))
    return records, {cat_id: names[cat_id] for cat_id in id_map}


def _box_array(boxes: list):
    """``boxes`` as an (N, 4) array of numbers, or None."""
    try:
        xywh = np.array(boxes, dtype=None) if boxes else np.zeros((0, 4))
    except ValueError:  # ragged
        return None
    return xywh.astype(np.float64) if xywh.dtype.kind in "iuf" and xywh.shape[1:] == (4,) else None


def _is_box(box) -> bool:
    xywh = _box_array([box])
    return xywh is not None and bool(np.isfinite(xywh).all())


def _image_sizes(records: list, positions: list) -> tuple[np.ndarray, np.ndarray]:
    """Width and height of each box's image (NaN where the JSON's are not numbers: the image
    scan names those)."""
    try:
        sizes = np.array([(r["width"], r["height"]) for r in records], dtype=np.float64)
    except (TypeError, ValueError):
        sizes = np.full((len(records), 2), np.nan)
    return sizes.reshape(-1, 2)[np.array(positions, dtype=np.int64)].T


def _log(json_file: str, records: list, orphans: int, flat: int, no_segmentation: int, ids: list):
    """What COCO allows, as detectron2 keeps it (and boxes without area, when allowed): logged."""
    empty = sum(1 for r in records if not r["annotations"])
    if empty:
        logger.info(
            "%s: %d of %d images have no box; detectron2 keeps them in the records, training "
            "drops them when DATALOADER.FILTER_EMPTY_ANNOTATIONS is True",
            json_file,
            empty,
            len(records),
        )
    if orphans:
        logger.warning(
            "%s: %d annotations of image ids not in 'images': ignored", json_file, orphans
        )
    if flat:
        logger.warning(
            "%s: %d boxes of zero or negative width or height: detectron2 drops them when it "
            "builds training targets",
            json_file,
            flat,
        )
    if no_segmentation:
        logger.warning(
            "%s: %d annotations without a valid polygon (3 points or more) are left out, as "
            "detectron2 leaves them out",
            json_file,
            no_segmentation,
        )
    if ids != list(range(1, len(ids) + 1)):
        logger.info(
            "%s: category ids %s are mapped in sorted order to 0..%d",
            json_file,
            short_list(ids, 8),
            len(ids) - 1,
        )


class _Notes(logging.Handler):
    """Keeps the log records of a read (a tool reads in its parent before a run's log exists)."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _ReadOnce:
    """A registered dataset's loader: the records read at registration, then the file again.
    ``source`` identifies what was read (paths, policy, the JSON's size and mtime); ``notes``
    what the read logged."""

    def __init__(self, records: list, source: tuple, name: str, notes=()):
        self.records, self.source, self.name, self.notes = records, source, name, list(notes)

    def __call__(self) -> list[dict]:
        records, self.records = self.records, None
        return records if records is not None else load_coco_json(*self.source[:2], self.name)


def _source(json_file: str, image_root: str, degenerate_boxes: str) -> tuple:
    try:
        stat = os.stat(json_file)
    except OSError:
        return None
    return json_file, image_root, degenerate_boxes, stat.st_size, stat.st_mtime_ns


def _registered_files(name: str):
    metadata = MetadataCatalog.get(name)
    return metadata.get("json_file", None), metadata.get("image_root", None)


def register_coco_dataset(
    name: str, json_file, image_root, replace: bool = False, degenerate_boxes: str = "error"
) -> list[dict]:
    """Read and check a COCO instances JSON (:func:`load_coco_records`), then register it under
    ``name`` (what ``DATASETS.TRAIN`` / ``TEST`` name) as detectron2's ``register_coco_instances``
    would: its records, ``thing_classes``, ``thing_dataset_id_to_contiguous_id``, and the
    ``json_file`` COCOEvaluator reads.  The same name may be registered again with the same files
    (unchanged files whose records this process read and has not handed out yet are not read
    again: the tools check in the parent, then a single training process registers again);
    ``replace``: also with others (else detectron2 refuses the name).  Returns the records."""
    json_file = os.path.abspath(os.path.expanduser(os.fspath(json_file)))
    image_root = os.path.abspath(os.path.expanduser(os.fspath(image_root)))
    source = _source(json_file, image_root, degenerate_boxes)
    loader = DatasetCatalog[name] if name in DatasetCatalog else None
    if isinstance(loader, _ReadOnce) and loader.records is not None and loader.source == source:
        for note in loader.notes:  # what the first read logged, for this run's log as well
            logger.handle(note)
        return loader.records
    notes, level = _Notes(), logger.level
    logger.addHandler(notes)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))  # kept even before a log exists
    try:
        records, names = _read(json_file, image_root, degenerate_boxes)
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
    if replace or _registered_files(name) == (json_file, image_root):
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
    DatasetCatalog.register(name, _ReadOnce(records, source, name, notes.records))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(names.values()),
        thing_dataset_id_to_contiguous_id={cat_id: i for i, cat_id in enumerate(names)},
        **{SCANNED_KEY: True},
    )
    logger.info(
        "registered dataset '%s': %d images, %d boxes, %d classes (%s)",
        name,
        len(records),
        sum(len(r["annotations"]) for r in records),
        len(names),
        short_list(names.values(), 10),
    )
    return records
