"""COCO-format files read once (nd_det.data.coco): detectron2's records, the refusals (one line
naming the file and the entry), registration; the tiny_coco writer."""

import hashlib
import json
import logging
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from nd_det.data import load_coco_records, register_coco_dataset
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
    """The one line a bad file ends in: a DataError naming the file first."""
    with pytest.raises(DataError) as caught:
        load_coco_records(json_path, image_dir, **kwargs)
    message = str(caught.value)
    assert message.startswith(str(json_path)) and "\n" not in message, message
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


# ------------------------------------------------------------ valid data, as detectron2 reads it


def test_records_equal_detectron2s_and_registration_reads_the_file_once(tmp_path, names):
    json_path, image_dir = write_tiny_coco(
        tmp_path, num_images=6, num_classes=2, seed=1, empty_images=2
    )
    name = names()
    records = register_coco_dataset(name, json_path, image_dir)
    assert records == load_coco_json(str(json_path), str(image_dir), names("detectron2"))
    assert DatasetCatalog.get(name) is records  # the first get: what registration read
    again = DatasetCatalog.get(name)  # later ones: detectron2's own reading of the file
    assert again == records and again is not records
    assert len(records) == 6 and sum(1 for r in records if not r["annotations"]) == 2
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == list(CLASS_NAMES[:2])
    assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    assert (metadata.evaluator_type, metadata.json_file) == ("coco", str(json_path))


def test_non_contiguous_category_ids_map_to_contiguous_ids(tmp_path, names):
    json_path, image_dir = write_tiny_coco(
        tmp_path, num_images=6, num_classes=3, seed=2, category_ids=(3, 7, 20)
    )
    name = names()
    records = register_coco_dataset(name, json_path, image_dir)
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 20: 2}
    data = json.loads(json_path.read_text())
    expected = {}
    for annotation in data["annotations"]:
        expected.setdefault(annotation["image_id"], []).append(
            {3: 0, 7: 1, 20: 2}[annotation["category_id"]]
        )
    got = {r["image_id"]: [a["category_id"] for a in r["annotations"]] for r in records}
    assert got == {image_id: expected.get(image_id, []) for image_id in got}
    DatasetCatalog.get(name)  # detectron2 recomputes the metadata and asserts it equals ours
    DatasetCatalog.get(name)


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
    empty = [r for r in DatasetCatalog.get(name) if not r["annotations"]][0]
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    mapped = DatasetMapper(cfg, is_train=True)(empty)  # zero boxes, no crash
    assert len(mapped["instances"]) == 0 and mapped["image"].shape[0] == 3


def test_register_same_files_twice_and_name_collisions(tmp_path, names, tiny):
    json_path, image_dir, _ = tiny
    other_json, other_dir = write_tiny_coco(tmp_path / "other", num_images=3, num_classes=1)
    name = names()
    first = register_coco_dataset(name, json_path, image_dir)
    # same files, unchanged, records not handed out yet (a tool's check, then one training
    # process): not read again; once handed out, or once the file changed: read again
    assert register_coco_dataset(name, json_path, image_dir) is first
    assert DatasetCatalog.get(name) is first
    second = register_coco_dataset(name, json_path, image_dir)
    assert second == first and second is not first
    os.utime(json_path, ns=(1, 1))
    assert register_coco_dataset(name, json_path, image_dir) is not second
    with pytest.raises(AssertionError, match=f"Dataset '{name}' is already registered"):
        register_coco_dataset(name, other_json, other_dir)  # detectron2's own refusal
    register_coco_dataset(name, other_json, other_dir, replace=True)
    assert len(DatasetCatalog.get(name)) == 3 and len(MetadataCatalog.get(name).thing_classes) == 1


def test_a_refused_file_registers_nothing(tiny, names):
    json_path, image_dir, data = tiny
    data["annotations"][0]["category_id"] = 99
    _rewrite(json_path, data)
    name = names()
    with pytest.raises(DataError):
        register_coco_dataset(name, json_path, image_dir)
    assert name not in DatasetCatalog.list()


def test_annotations_key_may_be_absent(tiny):
    json_path, image_dir, data = tiny
    del data["annotations"]
    _rewrite(json_path, data)
    records = load_coco_records(json_path, image_dir)
    assert len(records) == 8 and not any(r["annotations"] for r in records)


# ---------------------------------------------------------------- refused, in one line


def test_files_that_are_not_coco_json(tmp_path, tiny):
    json_path, image_dir, _ = tiny
    assert "is not valid JSON or cannot be read (FileNotFoundError" in _error(
        tmp_path / "nope.json", image_dir
    )
    assert "(IsADirectoryError" in _error(tmp_path, image_dir)
    text = json_path.read_text()
    json_path.write_text(text[: len(text) // 2])
    assert "is not valid JSON or cannot be read (JSONDecodeError" in _error(json_path, image_dir)
    json_path.write_text("[1, 2, 3]")
    assert "the top level is malformed (TypeError: list indices" in _error(json_path, image_dir)
    json_path.write_text(json.dumps({"info": {}, "annotations": []}))
    assert "the top level is malformed (KeyError: 'categories'); COCO's instances format" in (
        _error(json_path, image_dir)
    )
    json_path.write_text(json.dumps({"images": 5, "categories": [{"id": 1, "name": "x"}]}))
    assert "'images' is malformed (TypeError: 'int' object is not iterable)" in (
        _error(json_path, image_dir)
    )


def test_missing_image_files_are_named_and_counted(tiny, tmp_path):
    json_path, image_dir, _ = tiny
    for index in (1, 3, 5):
        (image_dir / f"{index:04d}.png").unlink()
    message = _error(json_path, image_dir)
    assert "3 of 8 image files listed in it are missing or unreadable: " in message
    assert f"{image_dir / '0001.png'} ([Errno 2] No such file or directory)" in message
    assert "8 of 8 image files listed in it are missing" in _error(json_path, tmp_path / "imgs")


def test_box_outside_the_image_names_the_annotation(tiny):
    json_path, image_dir, data = tiny
    annotation = data["annotations"][2]
    image = data["images"][annotation["image_id"] - 1]
    x, y, w, h = annotation["bbox"]
    annotation["bbox"] = [x, y, image["width"] - x + 1, h]  # within the 2 px tolerance: legal
    _rewrite(json_path, data)
    load_coco_records(json_path, image_dir)
    annotation["bbox"] = [x, y, image["width"] - x + 3, h]
    _rewrite(json_path, data)
    assert (
        f"annotation id {annotation['id']}: box [x, y, width, height] = {annotation['bbox']} "
        f"lies outside its image {image_dir / image['file_name']} (128 x 96) by > 2 px"
    ) in _error(json_path, image_dir)
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
    assert (
        f"annotation id {annotation['id']} has a box with zero or negative width or height "
        "(1 in all)"
    ) in message
    assert "--allow-degenerate-boxes" in message
    with caplog.at_level(logging.WARNING, logger="nd_det.data"):
        records = load_coco_records(json_path, image_dir, degenerate_boxes="warn")
    assert "1 boxes of zero or negative width or height: detectron2 drops them" in caplog.text
    assert records == load_coco_json(str(json_path), str(image_dir), "test_data_coco_flat")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["annotations"][4].update(category_id=99),
            "annotation id 5 has category_id 99, which 'categories' does not list",
        ),
        (lambda d: d["images"][2].update(id=2), "'images' list an image id twice"),
        (lambda d: d["annotations"][3].update(id=1), "'annotations' list an annotation id twice"),
        (
            lambda d: d["categories"].append({"id": 1, "name": "again"}),
            "'categories' list a category id twice",
        ),
        (lambda d: d["categories"].clear(), "'categories' list no category"),
        (lambda d: d["images"][0].pop("height"), "image id 1 is malformed (KeyError: 'height')"),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            "annotation id 1 has bbox [1, 2, 3], not four finite numbers",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4]),
            "annotation id 1 has bbox [1, 2, '3', 4], not four finite numbers",
        ),
        (
            lambda d: d["annotations"][0].pop("bbox"),
            "annotation id 1 is malformed (KeyError: 'bbox')",
        ),
        (
            lambda d: d["annotations"][0].update(ignore=1),
            'annotation id 1 has an "ignore" flag, which detectron2 does not support',
        ),
        (
            lambda d: d["annotations"][0].update(segmentation=5),
            "annotation id 1 is malformed (TypeError: 'int' object is not iterable)",
        ),
    ],
    ids=[
        "unknown-category",
        "image-id-twice",
        "annotation-id-twice",
        "category-id-twice",
        "no-categories",
        "no-height",
        "three-numbers",
        "a-string",
        "no-bbox",
        "ignore",
        "segmentation-int",
    ],
)
def test_entries_detectron2_would_refuse_or_trip_on_are_named(tiny, edit, message):
    json_path, image_dir, data = tiny
    edit(data)
    _rewrite(json_path, data)
    assert message in _error(json_path, image_dir)


def test_non_finite_numbers_in_boxes_and_sizes(tiny):
    json_path, image_dir, data = tiny
    data["annotations"][0]["bbox"][2] = float("nan")  # json writes NaN, and reads it back
    _rewrite(json_path, data)
    assert "annotation id 1 has bbox [" in _error(json_path, image_dir)
    data["annotations"][0]["bbox"][2] = 10
    data["images"][0]["width"] = float("inf")
    _rewrite(json_path, data)
    assert "0000.png is 128x96, the JSON says infx96" in _error(json_path, image_dir)


def test_every_image_is_decoded_and_compared_with_its_json_size(tiny):
    """Every image is opened (nd_det.data.image_scan): a size the JSON gets wrong, which
    detectron2 would raise on when a loader reaches the image, and a file that does not decode
    are each one DataError naming the file, before any model exists."""
    json_path, image_dir, data = tiny
    load_coco_records(json_path, image_dir)
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
