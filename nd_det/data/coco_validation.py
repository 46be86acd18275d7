"""Fast checks of a COCO-format instances JSON and its image folder, run before registration.

``validate_coco_json`` reads the JSON once, checks it, then opens every image it lists once
(:mod:`nd_det.data.image_scan`: a full decode and the size against the JSON, cached between
runs).  The first problem found raises one :class:`DataError` whose message names the JSON file,
the offending image / annotation / category id and the fix.  Checked, in this order:

1. the JSON file exists, is readable, parses, and is a COCO instances file (a dict with lists
   ``images`` and ``categories``; ``annotations`` may be absent, as in COCO's test-dev info files);
2. categories: each has an int ``id`` and a ``name``; ids are unique; there is at least one;
3. images: each has an ``id`` (int or str, one type for all), a ``file_name`` and positive
   ``height`` / ``width``; ids are unique;
4. the image folder exists and every ``file_name`` is a file under it (the message names the
   first few missing files and how many are missing);
5. annotations: each has an ``id`` (unique, as detectron2 asserts, except in files whose name
   contains ``minival``, which detectron2 also exempts), a ``category_id`` listed in
   ``categories``, a ``bbox`` of four finite numbers ``[x, y, width, height]`` with positive width
   and height, lying inside its image up to ``BOX_TOLERANCE_PX`` pixels, and no ``ignore`` flag
   (detectron2 does not support it);
6. every image decodes, and its size (after its EXIF orientation) is the JSON's ``width`` x
   ``height`` (:func:`~nd_det.data.image_scan.scan_images`; last, being the slow check).

Legal, and only logged:

- images without any annotation: detectron2 keeps them in the dataset records; training drops
  them when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True (its default) and evaluation uses them;
- category ids that are not ``1..K`` (COCO itself skips ids): detectron2's ``load_coco_json`` maps
  the sorted ids to contiguous ids ``0..K-1`` and stores the map in the metadata as
  ``thing_dataset_id_to_contiguous_id``; the evaluator maps them back;
- annotations whose ``image_id`` is not in ``images``: detectron2 ignores them.

Zero-size boxes: COCO's own ``instances_train2017.json`` holds two annotations with height 0
(ids 918 and 2206849), which detectron2 drops when it builds training instances.  A user's file
with such boxes is usually a conversion bug, so they are an error by default;
``degenerate_boxes="warn"`` logs them instead (for COCO train2017 and similar files).
"""

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DataError
from ..utils.values import is_int, is_number
from .image_scan import scan_images

__all__ = ["BOX_TOLERANCE_PX", "CocoSummary", "validate_coco_json"]

logger = logging.getLogger(__name__)

# How far (pixels) a box may reach past the image border before it counts as outside the image:
# rounding in converters often leaves x + width a fraction of a pixel (or one pixel, with inclusive
# VOC-style corners) past the border; detectron2 clips such boxes to the image when it loads them.
BOX_TOLERANCE_PX = 2.0
# How many offending file names an error message lists before it says "and N more".
MAX_NAMED = 5
DEGENERATE_BOX_POLICIES = ("error", "warn")


@dataclass(frozen=True)
class CocoSummary:
    """What validation learned about a COCO instances file."""

    json_file: str
    image_root: str
    num_images: int
    num_annotations: int
    num_images_without_boxes: int
    num_degenerate_boxes: int
    category_ids: tuple[int, ...]  # sorted: position i is detectron2's contiguous class id i
    class_names: tuple[str, ...]  # in the same order (detectron2's thing_classes)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def category_ids_contiguous(self) -> bool:
        """True when the ids are exactly 1..K (no mapping needed)."""
        return list(self.category_ids) == list(range(1, len(self.category_ids) + 1))

    @property
    def dataset_id_to_contiguous_id(self) -> dict[int, int]:
        return {cat_id: index for index, cat_id in enumerate(self.category_ids)}


def _fail(json_file: str, problem: str, fix: str) -> DataError:
    return DataError(f"{json_file}: {problem}. Fix: {fix}.")


def _is_finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _is_id(value) -> bool:
    return is_int(value) or isinstance(value, str)


def _name_some(items: Sequence[str]) -> str:
    named = ", ".join(str(item) for item in items[:MAX_NAMED])
    if len(items) > MAX_NAMED:
        named += f" and {len(items) - MAX_NAMED} more"
    return named


def _read_json(json_file: str) -> dict:
    if not os.path.exists(json_file):
        raise _fail(
            json_file,
            "COCO annotation file not found",
            "pass the path of an existing COCO-format instances JSON "
            "(e.g. annotations/instances_train2017.json)",
        )
    if os.path.isdir(json_file):
        raise _fail(
            json_file,
            "is a folder, not a COCO annotation file",
            "pass the JSON file inside it (e.g. annotations/instances_train2017.json)",
        )
    try:
        with open(json_file, "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise _fail(
            json_file,
            f"cannot read the annotation file ({error.strerror})",
            "check the file's permissions and that it is a local, readable file",
        ) from error
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(
            json_file,
            f"is not valid JSON ({error})",
            "regenerate the file (it may be truncated) or pass the right file",
        ) from error
    if not isinstance(data, dict):
        raise _fail(
            json_file,
            f"is JSON but its top level is a {type(data).__name__}, "
            "not a COCO dict with 'images', 'annotations' and 'categories'",
            "convert it to COCO instances format",
        )
    missing = [key for key in ("images", "categories") if key not in data]
    if missing:
        raise _fail(
            json_file,
            f"is not a COCO instances file: no {' or '.join(map(repr, missing))}"
            f" key (top-level keys: {sorted(data)[:10]})",
            "convert it to COCO instances format: a dict with lists 'images', "
            "'annotations' and 'categories'",
        )
    for key in ("images", "annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            raise _fail(
                json_file,
                f"'{key}' is a {type(data[key]).__name__}, not a list",
                "convert it to COCO instances format",
            )
    return data


def _check_categories(json_file: str, categories: list) -> dict[int, str]:
    if not categories:
        raise _fail(
            json_file,
            "'categories' is empty: a detector needs at least one class",
            'list the classes, e.g. "categories": [{"id": 1, "name": "tree"}]',
        )
    names_by_id: dict[int, str] = {}
    for index, category in enumerate(categories):
        if (
            not isinstance(category, dict)
            or not is_int(category.get("id"))
            or not isinstance(category.get("name"), str)
        ):
            raise _fail(
                json_file,
                f"category #{index} ({category!r:.80}) lacks an int 'id' or a str 'name'",
                'write every category as {"id": <int>, "name": <str>}',
            )
        cat_id = category["id"]
        if cat_id in names_by_id:
            raise _fail(
                json_file,
                f"category id {cat_id} is listed twice ('{names_by_id[cat_id]}'"
                f" and '{category['name']}')",
                "give every category its own id",
            )
        names_by_id[cat_id] = category["name"]
    return names_by_id


def _check_images(json_file: str, images: list) -> dict:
    """Returns {image id: image dict}."""
    by_id: dict = {}
    id_types = set()
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            raise _fail(
                json_file,
                f"image #{index} is a {type(image).__name__}, not a dict",
                "convert it to COCO instances format",
            )
        image_id = image.get("id")
        if not _is_id(image_id):
            raise _fail(
                json_file,
                f"image #{index} ({image.get('file_name')!r}) has no int or str "
                f"'id' (got {image_id!r})",
                "give every image a unique int 'id'",
            )
        id_types.add(type(image_id))
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise _fail(
                json_file,
                f"image id {image_id!r} has no 'file_name'",
                "give every image the path of its file relative to the image folder",
            )
        for key in ("height", "width"):
            if not _is_finite(image.get(key)) or image[key] <= 0:
                raise _fail(
                    json_file,
                    f"image id {image_id!r} ({file_name}) has {key}={image.get(key)!r}",
                    f"write the image's {key} in pixels "
                    "(a positive number; detectron2 needs both height and width)",
                )
        if image_id in by_id:
            raise _fail(
                json_file,
                f"duplicate image id {image_id!r}: used by "
                f"'{by_id[image_id]['file_name']}' and '{file_name}'",
                "give every image its own 'id' (and point each annotation's 'image_id' "
                "at the right one)",
            )
        by_id[image_id] = image
    if len(id_types) > 1:
        raise _fail(
            json_file,
            "image ids mix ints and strings (detectron2 sorts them)",
            "use one type, ideally ints, for every image 'id'",
        )
    return by_id


def _check_image_files(json_file: str, image_root: str, images: dict) -> None:
    if not os.path.isdir(image_root):
        raise _fail(
            json_file,
            f"image folder not found: {image_root}",
            "pass the folder that holds the images (the JSON's file_name entries are "
            "relative to it)",
        )
    missing = [
        image["file_name"]
        for image in images.values()
        if not os.path.isfile(os.path.join(image_root, image["file_name"]))
    ]
    if missing:
        raise _fail(
            json_file,
            f"{len(missing)} of {len(images)} image files listed in it are "
            f"missing under {image_root}: {_name_some(missing)}",
            "pass the folder that holds these files as the image folder (file_name is "
            "relative to it), copy the missing files there, or remove their entries "
            "from 'images'",
        )


def _check_annotations(
    json_file: str,
    annotations: list,
    images: dict,
    names_by_id: dict[int, str],
    degenerate_boxes: str,
) -> tuple[int, set, int]:
    """Returns (number of degenerate boxes, ids of images with a box, annotations of unknown
    images)."""
    check_unique_ids = "minival" not in os.path.basename(json_file)
    seen_ids = set()
    degenerate: list[str] = []
    images_with_boxes = set()
    orphans = 0
    known = sorted(names_by_id)
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or not _is_id(annotation.get("id")):
            raise _fail(
                json_file,
                f"annotation #{index} ({annotation!r:.80}) has no int 'id'",
                "give every annotation a unique int 'id' (pycocotools indexes by it)",
            )
        ann_id = annotation["id"]
        if check_unique_ids:
            if ann_id in seen_ids:
                raise _fail(
                    json_file,
                    f"annotation id {ann_id!r} is used twice",
                    "give every annotation its own 'id'",
                )
            seen_ids.add(ann_id)
        category_id = annotation.get("category_id")
        if not is_int(category_id) or category_id not in names_by_id:
            raise _fail(
                json_file,
                f"annotation id {ann_id!r} has category_id {category_id!r}, "
                f"which is not in 'categories' (known ids: {_name_some(known)})",
                "add that category to 'categories' or correct the annotation's category_id",
            )
        if annotation.get("ignore", 0):
            raise _fail(
                json_file,
                f'annotation id {ann_id!r} has "ignore": '
                f"{annotation['ignore']!r}, which detectron2 does not support",
                'delete ignored annotations, or mark crowd regions with "iscrowd": 1',
            )
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_finite, bbox)):
            raise _fail(
                json_file,
                f"annotation id {ann_id!r} has bbox {bbox!r:.80}, not four finite numbers",
                "write each box as [x, y, width, height] in pixels",
            )
        image_id = annotation.get("image_id")
        if not _is_id(image_id):
            raise _fail(
                json_file,
                f"annotation id {ann_id!r} has image_id {image_id!r}",
                "point every annotation at the 'id' of its image",
            )
        image = images.get(image_id)
        if image is None:
            orphans += 1
            continue
        x, y, width, height = bbox
        if width <= 0 or height <= 0:
            degenerate.append(f"{ann_id!r} (bbox {bbox} in {image['file_name']})")
            continue
        tol = BOX_TOLERANCE_PX
        if (
            x < -tol
            or y < -tol
            or x + width > image["width"] + tol
            or y + height > image["height"] + tol
        ):
            raise _fail(
                json_file,
                f"annotation id {ann_id!r}: box [x, y, width, height] = {bbox} "
                f"lies outside its image {image['file_name']} (width {image['width']}, "
                f"height {image['height']}) by more than {tol:g} px",
                "check the box format (COCO boxes are [x, y, width, height], not "
                "[x1, y1, x2, y2]) and the image's width/height, or clip the box",
            )
        images_with_boxes.add(image_id)
    if degenerate:
        message = (
            f"{json_file}: {len(degenerate)} annotation(s) have a box with zero or negative "
            f"width or height: annotation id {_name_some(degenerate)}"
        )
        if degenerate_boxes == "error":
            raise DataError(
                message + ". Fix: check the box format (COCO boxes are [x, y, width, height], not "
                "[x1, y1, x2, y2]) and delete or correct these annotations; for files known to "
                "carry a few such boxes (COCO train2017 has 2), pass --allow-degenerate-boxes "
                "(in Python: degenerate_boxes='warn'); detectron2 drops them when it builds "
                "training targets."
            )
        logger.warning("%s (detectron2 drops them when it builds training targets)", message)
    return len(degenerate), images_with_boxes, orphans


def validate_coco_json(json_file, image_root, degenerate_boxes: str = "error") -> CocoSummary:
    """Check a COCO instances JSON and its image folder (the folder the images' ``file_name``
    entries are relative to; see the module docstring); raise one DataError on the first
    problem.  Returns a :class:`CocoSummary`."""
    if degenerate_boxes not in DEGENERATE_BOX_POLICIES:
        raise ValueError(
            f"degenerate_boxes={degenerate_boxes!r}: use one of {DEGENERATE_BOX_POLICIES}"
        )
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    data = _read_json(json_file)
    names_by_id = _check_categories(json_file, data["categories"])
    images = _check_images(json_file, data["images"])
    _check_image_files(json_file, image_root, images)
    annotations = data.get("annotations", [])
    num_degenerate, images_with_boxes, orphans = _check_annotations(
        json_file, annotations, images, names_by_id, degenerate_boxes
    )
    scan_images(
        [
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "width": image["width"],
                "height": image["height"],
            }
            for image in images.values()
        ],
        json_file,
    )

    category_ids = tuple(sorted(names_by_id))
    summary = CocoSummary(
        json_file=json_file,
        image_root=image_root,
        num_images=len(images),
        num_annotations=len(annotations) - orphans,
        num_images_without_boxes=len(images) - len(images_with_boxes),
        num_degenerate_boxes=num_degenerate,
        category_ids=category_ids,
        class_names=tuple(names_by_id[cat_id] for cat_id in category_ids),
    )
    if "annotations" not in data:
        logger.info("%s has no 'annotations': an unannotated (test) set", json_file)
    if orphans:
        logger.warning(
            "%s: %d annotations point to image ids not in 'images'; detectron2 ignores them",
            json_file,
            orphans,
        )
    if summary.num_images_without_boxes:
        logger.info(
            "%s: %d of %d images have no box; detectron2 keeps them in the records, "
            "training drops them when DATALOADER.FILTER_EMPTY_ANNOTATIONS is True",
            json_file,
            summary.num_images_without_boxes,
            summary.num_images,
        )
    if not summary.category_ids_contiguous:
        logger.info(
            "%s: category ids %s are not 1..%d; detectron2 maps them in sorted order to "
            "contiguous ids 0..%d",
            json_file,
            _name_some(list(category_ids)),
            summary.num_classes,
            summary.num_classes - 1,
        )
    return summary
