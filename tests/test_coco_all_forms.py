"""Every valid COCO file trains (issue 36.3): one file holding at once what COCO allows (crowd
annotations with RLE segmentation, compressed and not, polygons, empty segmentation lists,
non-contiguous category ids, an image without annotations, extra fields at every level) is read
into exactly detectron2's records, then trains 2 steps and is evaluated by tools/train_net.py,
as plain detectron2 would."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from detectron2.data.datasets import load_coco_json

from nd_det.config import load_config
from nd_det.data import load_coco_records

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import (
    REPO,
    config_path,
    tiny_distill_opts,
    write_random_class_means,
    write_teacher_checkpoint,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = config_path("R50_from_R101_nd.yaml")


def _all_forms(folder):
    json_path, image_dir = write_tiny_coco(
        folder, num_images=5, seed=11, empty_images=1, category_ids=(3, 20)
    )
    data = json.loads(json_path.read_text())
    data["info"] = {"description": "every form COCO allows", "year": 2017}
    data["licenses"] = [{"id": 1, "name": "CC BY 4.0", "url": "https://example.org"}]
    for image in data["images"]:
        image.update(license=1, coco_url="http://example.org/x.png", date_captured="2013-11-14")
    for category in data["categories"]:
        category["keypoints"] = []  # extra per-category fields
    for index, annotation in enumerate(data["annotations"]):
        x, y, w, h = annotation["bbox"]
        annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]  # a polygon
        annotation["attributes"] = {"occluded": index % 2 == 0}
    height, width = data["images"][0]["height"], data["images"][0]["width"]
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[10:30, 20:50] = 1
    compressed = mask_util.encode(mask)
    compressed["counts"] = compressed["counts"].decode("ascii")  # as COCO's files write it
    uncompressed = {"counts": [], "size": [height, width]}
    for value, run in _runs(mask.flatten(order="F")):
        if not uncompressed["counts"] and value == 1:
            uncompressed["counts"].append(0)
        uncompressed["counts"].append(run)
    image_id = data["annotations"][0]["image_id"]
    next_id = max(a["id"] for a in data["annotations"]) + 1
    for offset, segmentation in enumerate((compressed, uncompressed)):  # two crowd regions
        data["annotations"].append(
            {
                "id": next_id + offset,
                "image_id": image_id,
                "category_id": 20,
                "iscrowd": 1,
                "segmentation": segmentation,
                "area": 600.0,
                "bbox": [20.0, 10.0, 30.0, 20.0],
            }
        )
    data["annotations"][1]["segmentation"] = []  # an empty segmentation list
    json_path.write_text(json.dumps(data))
    return json_path, image_dir, data


def _runs(flat):
    start = 0
    for i in range(1, len(flat) + 1):
        if i == len(flat) or flat[i] != flat[start]:
            yield int(flat[start]), i - start
            start = i


def test_a_file_with_every_valid_form_reads_as_detectron2_and_trains_and_evaluates(tmp_path):
    json_path, image_dir, data = _all_forms(tmp_path / "data")
    records = load_coco_records(json_path, image_dir)
    try:
        assert records == load_coco_json(str(json_path), str(image_dir), "all_forms_reference")
    finally:
        MetadataCatalog.pop("all_forms_reference", None)
    crowd = [a for r in records for a in r["annotations"] if a.get("iscrowd")]
    assert len(crowd) == 2 and all(isinstance(a["segmentation"], dict) for a in crowd)
    assert sum(1 for r in records if not r["annotations"]) == 1
    assert {a["category_id"] for r in records for a in r["annotations"]} == {0, 1}

    opts = tiny_distill_opts(str(tmp_path)) + [
        "DATASETS.TRAIN",
        "('all_forms',)",
        "DATASETS.TEST",
        "('all_forms',)",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.WARMUP_ITERS",
        "1",
    ]
    cfg = load_config(CONFIG, opts)
    write_teacher_checkpoint(cfg)
    write_random_class_means(cfg)
    proc = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", CONFIG]
        + ["--dataset", "all_forms", str(json_path), str(image_dir), *opts],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (tmp_path / "output" / "model_final.pth").is_file()
    assert "Evaluation results for bbox" in log
    assert re.search(r"\|\s*AP\s*\|\s*AP50\s*\|\s*AP75\s*\|", log)
