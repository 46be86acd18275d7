"""COCO-format registration: validation errors (exact messages), detectron2 loading, tiny_coco."""

import hashlib
import json
import logging
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from nd_det.data import register_coco_dataset, validate_coco_json
from nd_det.errors import DataError

from .helpers.tiny_coco import CLASS_NAMES, write_tiny_coco


@pytest.fixture
def names(request):
    """Unique dataset names for one test; unregistered afterwards."""
    used = []

    def make(suffix="train"):
        name = f"test_data_coco_{request.node.name}_{suffix}"
        used.append(name)
        return name

    yield make
    for name in used:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


@pytest.fixture
def tiny(tmp_path):
    """A valid 8-image, 2-class dataset; returns (json_path, image_dir, parsed json)."""
    json_path, image_dir = write_tiny_coco(
        tmp_path / "tiny", num_images=8, size=(96, 128), num_classes=2, seed=0
    )
    return json_path, image_dir, json.loads(json_path.read_text())


def _rewrite(json_path, data):
    json_path.write_text(json.dumps(data))


def _error(json_path, image_dir, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        validate_coco_json(json_path, image_dir, **kwargs)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message.startswith(f"{json_path}: ") and "Fix: " in message
    return message


# ---------------------------------------------------------------- the tiny dataset writer


def test_tiny_coco_is_deterministic_and_its_boxes_match_the_drawn_shapes(tmp_path):
    import numpy as np
    from PIL import Image

    def digest(folder):
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    first = write_tiny_coco(tmp_path / "a", num_images=5, num_classes=3, seed=3, empty_images=1)
    write_tiny_coco(tmp_path / "b", num_images=5, num_classes=3, seed=3, empty_images=1)
    write_tiny_coco(tmp_path / "c", num_images=5, num_classes=3, seed=4, empty_images=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")

    data = json.loads(first[0].read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES[:3])
    assert {a["image_id"] for a in data["annotations"]} <= {1, 2, 3, 4}  # image 5 is empty
    assert len(data["annotations"]) >= 4
    for annotation in data["annotations"]:
        image = data["images"][annotation["image_id"] - 1]
        pixels = np.asarray(Image.open(first[1] / image["file_name"])).astype(int)
        x, y, w, h = annotation["bbox"]
        colour = {"red": 0, "green": 1, "blue": 2}[
            CLASS_NAMES[annotation["category_id"] - 1].split("_")[0]
        ]
        # the shape's dominant channel is strong inside the box on every border row/column...
        inside = pixels[y : y + h, x : x + w, colour] - pixels[y : y + h, x : x + w].mean(axis=2)
        strong = inside > 60
        assert strong[0].any() and strong[-1].any() and strong[:, 0].any() and strong[:, -1].any()
        # ...and the box is tight: the ring just outside it holds none of that colour
        ring = np.zeros(pixels.shape[:2], bool)
        ring[max(y - 1, 0) : y + h + 1, max(x - 1, 0) : x + w + 1] = True
        ring[y : y + h, x : x + w] = False
        outside = pixels[ring, colour] - pixels[ring].mean(axis=1)
        assert (outside > 60).sum() <= 2  # background noise only


# ---------------------------------------------------------------- valid data through detectron2


def test_valid_dataset_registers_and_loads_every_record(tmp_path, names):
    json_path, image_dir = write_tiny_coco(
        tmp_path, num_images=6, num_classes=2, seed=1, empty_images=2
    )
    name = names()
    summary = register_coco_dataset(name, json_path, image_dir)
    assert (summary.num_images, summary.num_images_without_boxes, summary.num_classes) == (6, 2, 2)

    records = DatasetCatalog.get(name)
    data = json.loads(json_path.read_text())
    assert len(records) == 6
    assert sum(1 for r in records if not r["annotations"]) == 2  # images without boxes are kept
    assert sum(len(r["annotations"]) for r in records) == len(data["annotations"])
    for record in records:
        assert os.path.isfile(record["file_name"])
        assert (record["height"], record["width"]) == (96, 128)
        assert all(a["category_id"] in (0, 1) for a in record["annotations"])
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == list(CLASS_NAMES[:2])
    assert metadata.evaluator_type == "coco"
    assert metadata.json_file == str(json_path)
    assert len(MetadataCatalog.get(name).thing_classes) == 2


def test_non_contiguous_category_ids_map_to_contiguous_ids(tmp_path, names):
    json_path, image_dir = write_tiny_coco(
        tmp_path, num_images=6, num_classes=3, seed=2, category_ids=(3, 7, 20)
    )
    name = names()
    summary = register_coco_dataset(name, json_path, image_dir)
    assert summary.category_ids == (3, 7, 20) and not summary.category_ids_contiguous
    # detectron2 recomputes this metadata while loading and asserts it equals what we set
    records = DatasetCatalog.get(name)
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 20: 2}
    assert metadata.thing_classes == list(CLASS_NAMES[:3])

    data = json.loads(json_path.read_text())
    expected = {}
    for annotation in data["annotations"]:
        expected.setdefault(annotation["image_id"], []).append(
            {3: 0, 7: 1, 20: 2}[annotation["category_id"]]
        )
    got = {r["image_id"]: [a["category_id"] for a in r["annotations"]] for r in records}
    assert got == {image_id: expected.get(image_id, []) for image_id in got}
    assert set(sum(got.values(), [])) == {0, 1, 2}
    assert len(MetadataCatalog.get(name).thing_classes) == 3


def test_images_without_boxes_are_logged_kept_and_filtered_by_detectron2(tmp_path, names, caplog):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetMapper, get_detection_dataset_dicts

    json_path, image_dir = write_tiny_coco(tmp_path, num_images=5, seed=5, empty_images=3)
    name = names()
    with caplog.at_level(logging.INFO, logger="nd_det.data"):
        register_coco_dataset(name, json_path, image_dir)
    assert "3 of 5 images have no box" in caplog.text
    assert len(get_detection_dataset_dicts([name], filter_empty=False)) == 5
    assert len(get_detection_dataset_dicts([name], filter_empty=True)) == 2

    # an empty image goes through detectron2's training mapper: zero boxes, no crash
    empty = [r for r in DatasetCatalog.get(name) if not r["annotations"]][0]
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    mapped = DatasetMapper(cfg, is_train=True)(empty)
    assert len(mapped["instances"]) == 0 and mapped["image"].shape[0] == 3


def test_register_same_files_twice_and_name_collisions(tmp_path, names, tiny):
    json_path, image_dir, _ = tiny
    other_json, other_dir = write_tiny_coco(tmp_path / "other", num_images=3, num_classes=1)
    name = names()
    register_coco_dataset(name, json_path, image_dir)
    register_coco_dataset(name, json_path, image_dir)  # same files: fine
    with pytest.raises(
        DataError,
        match=f"dataset name '{name}' is already registered "
        f"\\(with {json_path} and {image_dir}\\).*replace=True",
    ):
        register_coco_dataset(name, other_json, other_dir)
    register_coco_dataset(name, other_json, other_dir, replace=True)
    assert len(DatasetCatalog.get(name)) == 3 and len(MetadataCatalog.get(name).thing_classes) == 1


def test_failed_validation_registers_nothing(tiny, names):
    json_path, image_dir, data = tiny
    data["annotations"][0]["category_id"] = 99
    _rewrite(json_path, data)
    name = names()
    with pytest.raises(DataError):
        register_coco_dataset(name, json_path, image_dir)
    assert name not in DatasetCatalog.list()


def test_missing_json(tmp_path):
    missing = tmp_path / "nope.json"
    message = _error(missing, tmp_path)
    assert message == (
        f"{missing}: COCO annotation file not found. Fix: pass the path of an "
        "existing COCO-format instances JSON (e.g. "
        "annotations/instances_train2017.json)."
    )


def test_json_that_is_a_folder(tmp_path):
    assert "is a folder, not a COCO annotation file" in _error(tmp_path, tmp_path)


def test_unreadable_json(tiny, monkeypatch):
    import nd_det.data.coco_validation as coco_validation

    json_path, image_dir, _ = tiny

    def refuse(path, *args, **kwargs):  # what open() does on a file without read permission
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(coco_validation, "open", refuse, raising=False)
    assert (
        "cannot read the annotation file (Permission denied). Fix: check the file's permissions"
    ) in _error(json_path, image_dir)


def test_truncated_json(tiny):
    json_path, image_dir, _ = tiny
    text = json_path.read_text()
    json_path.write_text(text[: len(text) // 2])
    message = _error(json_path, image_dir)
    assert (
        "is not valid JSON (" in message and "regenerate the file (it may be truncated)" in message
    )


def test_json_that_is_not_coco(tmp_path, tiny):
    json_path, image_dir, _ = tiny
    json_path.write_text("[1, 2, 3]")
    assert "is JSON but its top level is a list, not a COCO dict" in _error(json_path, image_dir)
    json_path.write_text(json.dumps({"info": {}, "annotations": []}))
    assert (
        "is not a COCO instances file: no 'images' or 'categories' key (top-level keys: "
        "['annotations', 'info'])" in _error(json_path, image_dir)
    )
    json_path.write_text(json.dumps({"images": {}, "categories": []}))
    assert "'images' is a dict, not a list" in _error(json_path, image_dir)


def test_missing_image_files_are_named_and_counted(tiny):
    json_path, image_dir, _ = tiny
    for index in (1, 3, 5):
        (image_dir / f"{index:04d}.png").unlink()
    message = _error(json_path, image_dir)
    assert (
        f"3 of 8 image files listed in it are missing under {image_dir}: 0001.png, 0003.png, "
        "0005.png. Fix: pass the folder that holds these files as the image folder"
    ) in message
    for index in (0, 2, 4, 6):
        (image_dir / f"{index:04d}.png").unlink()
    assert (
        "7 of 8 image files listed in it are missing under "
        f"{image_dir}: 0000.png, 0001.png, 0002.png, 0003.png, 0004.png and 2 more."
    ) in _error(json_path, image_dir)


def test_wrong_image_folder(tiny, tmp_path):
    json_path, _, _ = tiny
    message = _error(json_path, tmp_path / "imgs")
    assert (
        f"image folder not found: {tmp_path / 'imgs'}. Fix: pass the folder that holds "
        "the images" in message
    )


def test_box_outside_the_image_names_the_annotation(tiny):
    json_path, image_dir, data = tiny
    annotation = data["annotations"][2]
    image = data["images"][annotation["image_id"] - 1]
    x, y, w, h = annotation["bbox"]
    annotation["bbox"] = [x, y, image["width"] - x + 1, h]  # within the 2 px tolerance: legal
    _rewrite(json_path, data)
    validate_coco_json(json_path, image_dir)
    annotation["bbox"] = [x, y, image["width"] - x + 3, h]
    _rewrite(json_path, data)
    message = _error(json_path, image_dir)
    assert (
        f"annotation id {annotation['id']}: box [x, y, width, height] = {annotation['bbox']} "
        f"lies outside its image {image['file_name']} (width 128, height 96) by more than "
        "2 px. Fix: check the box format (COCO boxes are [x, y, width, height], not "
        "[x1, y1, x2, y2])"
    ) in message
    annotation["bbox"] = [-5, y, 10, h]
    _rewrite(json_path, data)
    assert f"annotation id {annotation['id']}: box" in _error(json_path, image_dir)


@pytest.mark.parametrize("width, height", [(0, 10), (10, 0), (-4, 10)])
def test_zero_or_negative_area_box_names_the_annotation(tiny, width, height, caplog):
    json_path, image_dir, data = tiny
    annotation = data["annotations"][1]
    annotation["bbox"] = annotation["bbox"][:2] + [width, height]
    _rewrite(json_path, data)
    message = _error(json_path, image_dir)
    image = data["images"][annotation["image_id"] - 1]["file_name"]
    assert (
        f"1 annotation(s) have a box with zero or negative width or height: annotation id "
        f"{annotation['id']} (bbox {annotation['bbox']} in {image}). Fix: "
    ) in message
    assert "pass --allow-degenerate-boxes" in message
    with caplog.at_level(logging.WARNING, logger="nd_det.data"):
        summary = validate_coco_json(json_path, image_dir, degenerate_boxes="warn")
    assert summary.num_degenerate_boxes == 1
    assert f"annotation id {annotation['id']}" in caplog.text


def test_unknown_category_in_an_annotation(tiny):
    json_path, image_dir, data = tiny
    data["annotations"][4]["category_id"] = 99
    _rewrite(json_path, data)
    assert (
        f"annotation id {data['annotations'][4]['id']} has category_id 99, which is not in "
        "'categories' (known ids: 1, 2). Fix: add that category to 'categories' or correct "
        "the annotation's category_id."
    ) in _error(json_path, image_dir)


def test_duplicate_image_ids(tiny):
    json_path, image_dir, data = tiny
    data["images"][2]["id"] = data["images"][1]["id"]
    _rewrite(json_path, data)
    assert (
        "duplicate image id 2: used by '0001.png' and '0002.png'. Fix: give every image its "
        "own 'id'"
    ) in _error(json_path, image_dir)


def test_duplicate_annotation_ids(tiny):
    json_path, image_dir, data = tiny
    data["annotations"][3]["id"] = data["annotations"][0]["id"]
    _rewrite(json_path, data)
    assert f"annotation id {data['annotations'][0]['id']} is used twice" in _error(
        json_path, image_dir
    )


def test_bad_categories_and_images(tiny):
    json_path, image_dir, data = tiny
    _rewrite(json_path, dict(data, categories=[]))
    assert "'categories' is empty: a detector needs at least one class" in _error(
        json_path, image_dir
    )
    _rewrite(json_path, dict(data, categories=data["categories"] + [{"id": 1, "name": "again"}]))
    assert f"category id 1 is listed twice ('{CLASS_NAMES[0]}' and 'again')" in _error(
        json_path, image_dir
    )
    del data["images"][0]["height"]
    _rewrite(json_path, data)
    assert (
        "image id 1 (0000.png) has height=None. Fix: write the image's height in pixels"
        in _error(json_path, image_dir)
    )


def test_bad_box_values_and_ignore_flag(tiny):
    json_path, image_dir, data = tiny
    saved = data["annotations"][0]["bbox"]
    data["annotations"][0]["bbox"] = [1, 2, 3]
    _rewrite(json_path, data)
    assert "annotation id 1 has bbox [1, 2, 3], not four finite numbers" in _error(
        json_path, image_dir
    )
    data["annotations"][0]["bbox"] = saved
    data["annotations"][0]["ignore"] = 1
    _rewrite(json_path, data)
    assert 'annotation id 1 has "ignore": 1, which detectron2 does not support' in _error(
        json_path, image_dir
    )


def test_every_image_is_decoded_and_compared_with_its_json_size(tiny):
    """Validation opens every image (nd_det.data.image_scan): a size the JSON gets wrong, which
    detectron2 would raise on when a loader reaches the image, and a file that does not decode
    are each one DataError naming the file, before any model exists."""
    json_path, image_dir, data = tiny
    validate_coco_json(json_path, image_dir)
    data["images"][0]["width"] = 130
    _rewrite(json_path, data)
    assert (
        f"1 of 8 images are not the size the JSON gives them (width x height): "
        f"{image_dir / '0000.png'} is 128x96, the JSON says 130x96"
    ) in _error(json_path, image_dir)
    data["images"][0]["width"] = 128
    _rewrite(json_path, data)
    (image_dir / "0004.png").write_bytes(b"not a png at all")
    assert (
        f"1 of 8 images cannot be decoded: {image_dir / '0004.png'} "
        "(UnidentifiedImageError: cannot identify image file"
    ) in _error(json_path, image_dir)


def test_annotations_key_may_be_absent(tiny):
    json_path, image_dir, data = tiny
    del data["annotations"]
    _rewrite(json_path, data)
    summary = validate_coco_json(json_path, image_dir)
    assert (summary.num_annotations, summary.num_images_without_boxes) == (0, 8)
