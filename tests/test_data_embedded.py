"""The embedded deepforest tree-crown dataset: tiling, split, determinism, cache, registration."""

import hashlib
import json
import shutil
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from nd_common import embedded
from nd_common.embedded import deepforest_data_dir
from PIL import Image

from nd_det.errors import DataError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build shared by the read-only tests of this module."""
    return embedded.ensure_embedded_dataset(tmp_path_factory.mktemp("embedded") / "trees")


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _reference_source_boxes():
    """Boxes of every deepforest XML, read here independently of nd_det: {image name: boxes}."""
    boxes = {}
    for xml_path in sorted(deepforest_data_dir().glob("*.xml")):
        root = ElementTree.parse(xml_path).getroot()
        name = root.findtext("filename")
        boxes[name] = [
            tuple(int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            for obj in root.iter("object")
        ]
    return boxes


# ---------------------------------------------------------------- the built dataset


def test_tiles_cover_each_image_without_overlap(built):
    """The 1249 x 1035 crop: columns 0-400-800-1200 (the last 49 px strip is under 100 px: left
    out), rows 400, 400 and 235 px tall; the 400 x 400 images are kept whole.  (How boxes are
    clipped to the tiles: test_boxes_match_an_independent_clip_of_the_source_annotations.)"""
    images = [i for path in (built.train_json, built.val_json) for i in _load(path)["images"]]
    windows = [
        i["window"] for i in images if i["source"] == "2019_YELL_2_541000_4977000_image_crop.png"
    ]
    assert sorted(windows) == sorted(
        [x, y0, x + 400, y1]
        for x in (0, 400, 800)
        for y0, y1 in ((0, 400), (400, 800), (800, 1035))
    )
    assert all(i["width"] == i["window"][2] - i["window"][0] for i in images)
    whole = {
        i["file_name"]: i["window"]
        for i in images
        if i["source"] in ("OSBS_029.tif", "SOAP_061.png")
    }
    assert whole == {"OSBS_029.png": [0, 0, 400, 400], "SOAP_061.png": [0, 0, 400, 400]}


def test_one_class_and_every_box_inside_its_tile(built):
    for path in (built.train_json, built.val_json):
        coco = _load(path)
        assert [c["name"] for c in coco["categories"]] == ["tree"]
        images = {image["id"]: image for image in coco["images"]}
        for image in coco["images"]:
            with Image.open(built.image_dir / image["file_name"]) as tile:
                assert tile.size == (image["width"], image["height"]) and tile.mode == "RGB"
        for annotation in coco["annotations"]:
            x, y, w, h = annotation["bbox"]
            image = images[annotation["image_id"]]
            assert annotation["category_id"] == 1
            assert w >= 4 and h >= 4 and annotation["area"] == w * h
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]


def test_boxes_match_an_independent_clip_of_the_source_annotations(built):
    """Every (tile, box) pair equals what clipping deepforest's own XML boxes to the tile gives."""
    sources = _reference_source_boxes()
    assert sum(map(len, sources.values())) == 951  # deepforest 2.1.0: 574 + 279 + 61 + 37
    got, expected = set(), set()
    for path in (built.train_json, built.val_json):
        coco = _load(path)
        images = {image["id"]: image for image in coco["images"]}
        for annotation in coco["annotations"]:
            image = images[annotation["image_id"]]
            got.add((image["file_name"], tuple(annotation["bbox"])))
        for image in coco["images"]:
            wx0, wy0, wx1, wy1 = image["window"]
            for x0, y0, x1, y1 in sources[image["source"]]:
                cx0, cy0, cx1, cy1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
                visible = max(cx1 - cx0, 0) * max(cy1 - cy0, 0)
                if min(cx1 - cx0, cy1 - cy0) >= 4 and visible >= 0.4 * (x1 - x0) * (y1 - y0):
                    expected.add((image["file_name"], (cx0 - wx0, cy0 - wy0, cx1 - cx0, cy1 - cy0)))
    assert got == expected


def test_tiles_hold_the_source_pixels(built):
    coco = _load(built.val_json)
    image = next(i for i in coco["images"] if i["source"].endswith("541000_4977000_image_crop.png"))
    with Image.open(deepforest_data_dir() / image["source"]) as source:
        window = np.asarray(source.convert("RGB").crop(tuple(image["window"])))
    with Image.open(built.image_dir / image["file_name"]) as tile:
        assert np.array_equal(np.asarray(tile), window)


def test_split_is_disjoint_by_area_and_fair(built):
    train, val = _load(built.train_json), _load(built.val_json)
    assert not {i["file_name"] for i in train["images"]} & {i["file_name"] for i in val["images"]}
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    for t in train["images"]:
        for v in val["images"]:
            if t["source"] == v["source"]:
                tx0, ty0, tx1, ty1 = t["window"]
                vx0, vy0, vx1, vy1 = v["window"]
                assert min(tx1, vx1) <= max(tx0, vx0) or min(ty1, vy1) <= max(ty0, vy0)
    boxes = {"train": len(train["annotations"]), "val": len(val["annotations"])}
    tiles = {"train": len(train["images"]), "val": len(val["images"])}
    assert boxes["val"] >= 100 and 0.15 <= boxes["val"] / sum(boxes.values()) <= 0.3
    assert 0.15 <= tiles["val"] / sum(tiles.values()) <= 0.3
    # the whole 400 x 400 images are training images; the val tiles come from both large crops
    assert {i["source"] for i in train["images"]} >= {"OSBS_029.tif", "SOAP_061.png"}
    assert len({i["source"] for i in val["images"]}) == 2


def test_build_is_deterministic(built, tmp_path):
    again = embedded.ensure_embedded_dataset(tmp_path / "trees")
    for name in ("train.json", "val.json", "build_stamp.json"):
        assert (again.root / name).read_bytes() == (built.root / name).read_bytes()
    assert _digests(again.root) == _digests(built.root)


def test_current_cache_is_reused_and_a_missing_tile_or_new_stamp_rebuilds(
    built, tmp_path, monkeypatch
):
    root = tmp_path / "trees"
    shutil.copytree(built.root, root)
    reference = _digests(root)
    real_build = embedded._build
    calls = []

    def counting_build(*args):
        calls.append(1)
        real_build(*args)

    monkeypatch.setattr(embedded, "_build", counting_build)
    embedded.ensure_embedded_dataset(root)
    assert calls == []  # up to date: nothing rebuilt

    tile = sorted((root / "images").iterdir())[5]
    tile.unlink()
    embedded.ensure_embedded_dataset(root)
    assert calls == [1] and tile.is_file() and _digests(root) == reference

    stamp = _load(root / "build_stamp.json")
    stamp["build_format_version"] = 0
    (root / "build_stamp.json").write_text(json.dumps(stamp))
    embedded.ensure_embedded_dataset(root)
    assert calls == [1, 1] and _digests(root) == reference
    assert [
        p.name
        for p in tmp_path.iterdir()
        if p.name.startswith(".trees.") and p.name != ".trees.lock"
    ] == []  # no staging or old folder left behind


def test_failed_build_keeps_the_old_folder_and_leaves_no_partial_one(built, tmp_path, monkeypatch):
    def broken_build(staging, *args):
        (staging / "train.json").write_text("{")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_build", broken_build)
    with pytest.raises(RuntimeError, match="disk full"):
        embedded.ensure_embedded_dataset(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fresh.lock"]

    root = tmp_path / "old"
    shutil.copytree(built.root, root)
    (root / "build_stamp.json").write_text("{}")  # out of date: a rebuild is attempted
    before = _digests(root)
    with pytest.raises(RuntimeError, match="disk full"):
        embedded.ensure_embedded_dataset(root)
    assert _digests(root) == before


def test_register_embedded_dataset(built):
    train_name, val_name = embedded.register_embedded_dataset(built.root)
    try:
        assert (train_name, val_name) == ("deepforest_trees_train", "deepforest_trees_val")
        train, val = DatasetCatalog.get(train_name), DatasetCatalog.get(val_name)
        assert len(train) == len(_load(built.train_json)["images"])
        assert len(val) == len(_load(built.val_json)["images"])
        assert all(a["category_id"] == 0 for r in train + val for a in r["annotations"])
        assert MetadataCatalog.get(val_name).thing_classes == ["tree"]
        assert len(MetadataCatalog.get(train_name).thing_classes) == 1
        assert embedded.register_embedded_dataset(built.root) == (train_name, val_name)
    finally:
        for name in ("deepforest_trees_train", "deepforest_trees_val"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_summary_command(built, capsys):
    embedded.main(["--root", str(built.root)])
    lines = capsys.readouterr().out.splitlines()
    train, val = _load(built.train_json), _load(built.val_json)
    assert lines[0] == f"embedded dataset in {built.root}"
    assert lines[2].split()[:3] == [
        "train",
        str(len(train["images"])),
        str(len(train["annotations"])),
    ]
    assert lines[3].split()[:3] == ["val", str(len(val["images"])), str(len(val["annotations"]))]


def test_missing_deepforest_names_the_setup_script(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "deepforest" else real_find_spec(name, *a),
    )
    with pytest.raises(DataError) as caught:
        embedded.ensure_embedded_dataset(tmp_path / "trees")
    assert str(caught.value) == (
        "the embedded tree-crown dataset needs the data files of the PyPI package "
        "deepforest==2.1.0, which is not installed in this Python. Fix: run "
        "`bash scripts/setup_env.sh` from the repository root (it installs it), or "
        "`pip install --no-deps deepforest==2.1.0` in this Python environment"
    )
    assert not (tmp_path / "trees").exists()


def test_default_root_follows_nd_det_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ND_DET_DATA", str(tmp_path))
    assert embedded.default_embedded_root() == tmp_path / "deepforest_trees"
    monkeypatch.delenv("ND_DET_DATA")
    assert embedded.default_embedded_root().name == "deepforest_trees"
