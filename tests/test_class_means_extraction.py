"""tools/extract_class_means.py: one process == two processes (gloo) == a slow reference."""
import json
import os
import subprocess
import sys

import torch
from detectron2.data import detection_utils
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from nd_det.class_means_extraction import extract_class_means
from nd_det.data import register_coco_dataset
from nd_det.losses import load_class_means
from nd_det.modeling import FrozenTeacher

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import REPO, config_path, tiny_distill_cfg, tiny_distill_opts

TOOL = os.path.join(REPO, "tools", "extract_class_means.py")


def _dataset(tmp_path, name="means_train", extra_category=False):
    json_path, images = write_tiny_coco(tmp_path / name, num_images=5, seed=4, empty_images=1)
    if extra_category:  # a class that no annotation uses
        data = json.loads(json_path.read_text())
        data["categories"].append({"id": 99, "name": "unicorn"})
        json_path.write_text(json.dumps(data))
    register_coco_dataset(name, json_path, images, replace=True)
    return name, json_path, images


def _cfg(tmp_path, dataset, num_classes=2):
    return tiny_distill_cfg(
        str(tmp_path), num_classes=num_classes, write_class_means=False,
        extra_opts=["DATASETS.TRAIN", f"('{dataset}',)", "DATALOADER.NUM_WORKERS", "0"],
    )


def _slow_reference(cfg, json_path, image_dir):
    """Per-class means of the teacher's box-head embedding of each GT box, one box at a time."""
    frozen = FrozenTeacher(cfg)
    teacher, teacher_cfg = frozen.model, frozen.cfg
    data = json.loads(json_path.read_text())
    cat_index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    sums = {}
    counts = {}
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        img = detection_utils.read_image(os.path.join(image_dir, image["file_name"]),
                                         format=teacher_cfg.INPUT.FORMAT)
        # the tiny images already have the test size: no resize happens
        assert min(img.shape[:2]) == cfg.INPUT.MIN_SIZE_TEST
        tensor = torch.as_tensor(img.transpose(2, 0, 1).copy())
        with torch.no_grad():
            images = teacher.preprocess_image([{"image": tensor}])
            feats = teacher.backbone(images.tensor)
            level_feats = [feats[f] for f in teacher.roi_heads.box_in_features]
            for ann in anns:
                x, y, w, h = ann["bbox"]
                box = Boxes(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32))
                emb = teacher.roi_heads.box_head(teacher.roi_heads.box_pooler(level_feats, [box]))
                k = cat_index[ann["category_id"]]
                sums[k] = sums.get(k, 0) + emb[0].double()
                counts[k] = counts.get(k, 0) + 1
    return {k: (sums[k] / counts[k]).float() for k in sums}, counts


def _run_tool(tmp_path, dataset, json_path, images, *extra, num_classes=2):
    cmd = [sys.executable, TOOL, "--config-file", config_path("R50_from_R101_nd.yaml"),
           "--dataset", dataset, str(json_path), str(images), *extra,
           *tiny_distill_opts(str(tmp_path), num_classes=num_classes),
           "DATASETS.TRAIN", f"('{dataset}',)", "DATALOADER.NUM_WORKERS", "0"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_one_process_equals_two_processes_and_slow_reference(tmp_path):
    dataset, json_path, images = _dataset(tmp_path)
    cfg = _cfg(tmp_path, dataset)
    one = extract_class_means(cfg, output=str(tmp_path / "one.pth"))

    proc = _run_tool(tmp_path, dataset, json_path, images,
                     "--num-gpus", "2", "--output", str(tmp_path / "two.pth"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "ETA" in proc.stdout + proc.stderr  # progress is reported
    two = load_class_means(str(tmp_path / "two.pth"), num_classes=3, dim=64)

    assert torch.equal(one.counts, two.counts)
    torch.testing.assert_close(one.means, two.means, rtol=1e-5, atol=1e-5)

    reference, ref_counts = _slow_reference(cfg, json_path, images)
    assert sorted(reference) == [0, 1]
    for k, mean in reference.items():
        assert int(one.counts[k]) == ref_counts[k]
        torch.testing.assert_close(one.means[k], mean, rtol=1e-5, atol=1e-5)
    # background: sampled proposals matching no GT, as the ROI head samples them
    assert int(one.counts[2]) > 0
    assert one.metadata["background_row"] == 2
    assert one.metadata["teacher_weights"] == cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    assert one.metadata["num_images"] == 5
    assert one.metadata["class_names"][-1] == "background"


def test_default_output_is_the_config_key_and_training_uses_it(tmp_path):
    dataset, _, _ = _dataset(tmp_path)
    cfg = _cfg(tmp_path, dataset)
    assert not os.path.exists(cfg.MODEL.DISTILL.CLASS_MEANS)
    extract_class_means(cfg)
    table = load_class_means(cfg.MODEL.DISTILL.CLASS_MEANS)
    assert table.means.shape == (3, 64)
    model = build_model(cfg)  # the ND term loads and validates the new file
    unit = model.distill_losses[1].unit_means
    torch.testing.assert_close(unit, table.means / table.means.norm(dim=1, keepdim=True))


def test_max_images_limits_the_pass(tmp_path):
    dataset, _, _ = _dataset(tmp_path)
    cfg = _cfg(tmp_path, dataset)
    table = extract_class_means(cfg, output=str(tmp_path / "few.pth"), max_images=2,
                                allow_empty_classes=True)
    assert table.metadata["num_images"] == 2


def test_class_without_samples_is_an_error_naming_it(tmp_path):
    dataset, json_path, images = _dataset(tmp_path, "means_unicorn", extra_category=True)
    _cfg(tmp_path, dataset, num_classes=3)  # writes the 3-class teacher checkpoint
    proc = _run_tool(tmp_path, dataset, json_path, images, num_classes=3)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert "ERROR: no samples for class(es) 2 (unicorn)" in proc.stderr
    assert not os.path.exists(tmp_path / "class_means.pth")  # nothing half-written


def test_allow_empty_classes_fills_and_flags(tmp_path):
    dataset, _, _ = _dataset(tmp_path, "means_unicorn2", extra_category=True)
    cfg = _cfg(tmp_path, dataset, num_classes=3)
    table = extract_class_means(cfg, allow_empty_classes=True)
    assert table.zero_filled_classes == [2]
    loaded = load_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, num_classes=4, dim=64)
    assert torch.count_nonzero(loaded.means[2]) == 0
    assert loaded.zero_filled_classes == [2]


def test_format_duration():
    from nd_det.utils.progress import format_duration

    assert format_duration(-3) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
