"""The up-front image scan (nd_det.data.image_scan): every image decoded once and compared with
its JSON as detectron2 compares it, what detectron2 tolerates counted, worker processes, the
cache between runs and its invalidation."""

import json
import logging
import os

import numpy as np
import pytest
from detectron2.data.detection_utils import SizeMismatchError, check_image_size, read_image
from PIL import Image

from nd_det.data import image_scan, load_coco_records
from nd_det.data.image_scan import cache_folder, scan_images
from nd_det.errors import DataError

from .helpers.tiny_coco import write_tiny_coco


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, and nothing remembered from other tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(image_scan, "_MEMO", {})


def _records(folder, sizes, image_format="png", **save):
    """Images of the given (width, height), and their records as the JSON would give them."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index, (width, height) in enumerate(sizes):
        path = folder / f"{index:04d}.{image_format}"
        pixels = np.random.RandomState(index).randint(0, 255, (height, width, 3), np.uint8)
        Image.fromarray(pixels).save(path, **save)
        records.append({"file_name": str(path), "width": width, "height": height})
    return records


def _exif_rotated(path, width, height):
    """A JPEG stored as width x height whose EXIF orientation 6 turns it (height x width)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (width, height), (90, 120, 30)).save(path, exif=exif.tobytes())


def _detectron2_accepts(record) -> bool:
    """What detectron2's loader does with the record: read_image, then check_image_size."""
    try:
        check_image_size(dict(record), read_image(record["file_name"], format="BGR"))
    except SizeMismatchError:
        return False
    return True


def test_sizes_are_compared_after_the_exif_orientation_as_detectron2_does(tmp_path):
    path = tmp_path / "turned.jpg"
    _exif_rotated(path, 40, 30)
    stored = {"file_name": str(path), "width": 40, "height": 30}  # the size before turning
    turned = {"file_name": str(path), "width": 30, "height": 40}
    assert not _detectron2_accepts(stored) and _detectron2_accepts(turned)  # the reference
    with pytest.raises(DataError) as caught:
        scan_images([stored], "turned.json")
    assert (
        f"{path} is 30x40 after its EXIF orientation 6 (stored 40x30), the JSON says 40x30"
        in str(caught.value)
    )
    assert "record the turned size and draw the boxes on the turned image" in str(caught.value)
    scan = scan_images([turned], "turned.json")
    assert (scan.num_images, scan.num_oriented) == (1, 1)


def test_what_detectron2_tolerates_is_one_warning_with_a_count(tmp_path, caplog):
    records = _records(tmp_path / "rgb", [(32, 24)] * 3)
    grey = tmp_path / "grey.png"
    Image.new("L", (32, 24), 128).save(grey)
    records.append({"file_name": str(grey), "width": 32, "height": 24})
    turned = tmp_path / "turned.jpg"
    _exif_rotated(turned, 24, 32)
    records.append({"file_name": str(turned), "width": 32, "height": 24})
    with caplog.at_level(logging.WARNING, logger="nd_det.data.image_scan"):
        scan = scan_images(records, "mixed.json")
    assert scan.modes == {"L": 1} and scan.num_oriented == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "mixed.json: 1 of 5 images carry an EXIF orientation tag: detectron2 turns them before "
        "use, so their boxes must be drawn on the turned image (the recorded sizes already are "
        "the turned ones)",
        "mixed.json: 1 of 5 images are not RGB (1 L): detectron2 converts them when it reads them",
    ]


def test_a_file_whose_header_reads_but_whose_data_is_cut_is_refused(tmp_path):
    """The header alone would pass: only the full decode finds a truncated JPEG."""
    (record,) = _records(tmp_path, [(64, 48)], "jpg", quality=90)
    data = open(record["file_name"], "rb").read()
    open(record["file_name"], "wb").write(data[: len(data) * 2 // 3])
    with Image.open(record["file_name"]) as header_only:
        assert header_only.size == (64, 48)
    with pytest.raises(DataError) as caught:
        scan_images([record], "cut.json")
    assert (
        f"cut.json: 1 of 1 images cannot be decoded: {record['file_name']} (OSError: image "
        "file is truncated"
    ) in str(caught.value)


def test_many_images_are_decoded_in_worker_processes_with_progress(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(image_scan, "_PROGRESS_MIN", 10)
    records = _records(tmp_path / "many", [(16, 12)] * 70)
    bad = records[41]["file_name"]
    open(bad, "wb").write(b"\x89PNG\r\n\x1a\n cut")
    with caplog.at_level(logging.INFO, logger="nd_det.data.image_scan"):
        with pytest.raises(DataError) as caught:
            scan_images(records, "many.json", workers=2)
    assert f"many.json: 1 of 70 images cannot be decoded: {bad} (" in str(caught.value)
    assert "many.json: decoding 70 images with 2 processes" in caplog.text
    assert "images decoded, ETA 0:00:" in caplog.text
    os.unlink(bad)
    del records[41]
    assert scan_images(records, "many.json", workers=2).num_decoded == 0  # kept from before


def test_the_cache_makes_a_second_scan_decode_nothing_until_a_file_changes(tmp_path, monkeypatch):
    json_path, image_dir = write_tiny_coco(tmp_path / "data", num_images=6, seed=3)
    records = [
        {"file_name": str(image_dir / i["file_name"]), "width": i["width"], "height": i["height"]}
        for i in json.loads(json_path.read_text())["images"]
    ]
    assert scan_images(records, str(json_path)).num_decoded == 6
    files = list(cache_folder().iterdir())
    assert len(files) == 1 and json.loads(files[0].read_text())["source"] == str(json_path)

    monkeypatch.setattr(image_scan, "_MEMO", {})  # a new process: only the cache file is left
    assert scan_images(records, str(json_path)).num_decoded == 0
    changed = image_dir / "0002.png"
    os.utime(changed, ns=(1, 1))  # the mtime differs from the cached one: decoded again
    assert scan_images(records, str(json_path)).num_decoded == 1
    monkeypatch.setattr(image_scan, "_MEMO", {})
    monkeypatch.setattr(image_scan, "_pillow_version", lambda: "0.0")  # another Pillow
    assert scan_images(records, str(json_path)).num_decoded == 6
    monkeypatch.setattr(image_scan, "_MEMO", {})
    Image.new("RGB", (128, 90)).save(changed)  # replaced by an image of another size
    with pytest.raises(DataError, match=r"0002.png is 128x90, the JSON says 128x96"):
        load_coco_records(json_path, image_dir)


def test_an_unwritable_cache_only_warns(tmp_path, monkeypatch, caplog):
    (tmp_path / "blocked").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
    records = _records(tmp_path / "few", [(16, 12)] * 2)
    with caplog.at_level(logging.WARNING, logger="nd_det.data.image_scan"):
        assert scan_images(records, "few.json").num_decoded == 2
    assert "cannot write the image-scan cache" in caplog.text and "[Errno" in caplog.text


def test_records_without_sizes_are_decoded_but_not_compared(tmp_path):
    """detectron2 compares only the sizes a dataset gives (check_image_size), so does the scan;
    such files are still decoded."""
    (record,) = _records(tmp_path, [(20, 10)])
    del record["width"], record["height"]
    assert scan_images([record], "no_sizes.json").num_decoded == 1
    open(record["file_name"], "wb").write(b"GIF89a cut")
    with pytest.raises(DataError, match=r"1 of 1 images cannot be decoded"):
        scan_images([record], "no_sizes.json")


def test_a_dataset_registered_by_detectron2_itself_is_scanned_from_its_records(tmp_path):
    """detectron2's builtin COCO sets are registered by detectron2, not by nd-det: the preflight
    scans them from their records (DatasetCatalog), once per process."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    from nd_det.data.image_scan import SCANNED_KEY, scan_registered_datasets

    json_path, image_dir = write_tiny_coco(tmp_path / "d2", num_images=3, seed=4)
    data = json.loads(json_path.read_text())
    data["images"][2]["width"] = 64
    json_path.write_text(json.dumps(data))
    name = "test_image_scan_registered_by_detectron2"
    register_coco_instances(name, {}, str(json_path), str(image_dir))
    try:
        with pytest.raises(
            DataError,
            match=rf"{json_path}: 1 of 3 images are not the size the "
            r"JSON gives them .*0002.png is 128x96, the JSON says "
            r"64x96",
        ):
            scan_registered_datasets([name])
        data["images"][2]["width"] = 128
        json_path.write_text(json.dumps(data))
        scan_registered_datasets([name, name])
        assert MetadataCatalog.get(name).get(SCANNED_KEY) is True
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
