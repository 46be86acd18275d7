"""tools/extract_class_means.py: both protocols == a slow per-image reimplementation; one process
== two processes (gloo); the checks that run before the pass."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import detection_utils
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling import build_model
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.structures import Boxes, pairwise_iou
from PIL import Image

from nd_det.class_means import load_class_means
from nd_det.class_means.detection import (
    PROTOCOLS,
    REFERENCE_NUM_IMAGES,
    check_extraction,
    extract_class_means,
    parse_max_images,
)
from nd_det.data import register_coco_dataset
from nd_det.errors import DataError
from nd_det.modeling import FrozenTeacher

from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import REPO, config_path, tiny_distill_cfg, tiny_distill_opts

TOOL = os.path.join(REPO, "tools", "extract_class_means.py")
# training augmentation of the tests: three short sides around the tiny images' 96 px, and
# detectron2's default horizontal flip
TRAIN_SIZES = ["INPUT.MIN_SIZE_TRAIN", "(80, 96, 112)", "INPUT.MAX_SIZE_TRAIN", "160"]


def _dataset(tmp_path, name="means_train", extra_category=False):
    json_path, images = write_tiny_coco(tmp_path / name, num_images=5, seed=4, empty_images=1)
    data = json.loads(json_path.read_text())
    # float boxes, as in COCO: detectron2's resize truncates integer box coordinates in place
    for ann in data["annotations"]:
        ann["bbox"] = [float(v) for v in ann["bbox"]]
    if extra_category:  # a class that no annotation uses
        data["categories"].append({"id": 99, "name": "unicorn"})
    json_path.write_text(json.dumps(data))
    register_coco_dataset(name, json_path, images, replace=True)
    return name, json_path, images


def _dataset_opts(dataset):
    return ["DATASETS.TRAIN", f"('{dataset}',)", "DATALOADER.NUM_WORKERS", "0", *TRAIN_SIZES]


def _cfg(tmp_path, dataset, num_classes=2):
    return tiny_distill_cfg(
        str(tmp_path),
        num_classes=num_classes,
        write_class_means=False,
        extra_opts=_dataset_opts(dataset),
    )


# ----------------------------------------------------------------------------- slow reference
def _seed(seed, index):
    return (seed * 1_000_003 + index) % 2**32


def _one_embedding(model, feats, box):
    heads = model.roi_heads
    pooled = heads.box_pooler([feats[f] for f in heads.box_in_features], [Boxes(box[None])])
    return heads.box_head(pooled)[0].double()


def _proposals(model, tcfg, images, feats, train):
    """The RPN's proposals by hand: decode every anchor, then detectron2's top-k + NMS with the
    TRAIN or TEST top-k of the teacher's config."""
    rpn = model.proposal_generator
    level = [feats[f] for f in tcfg.MODEL.RPN.IN_FEATURES]
    anchors = rpn.anchor_generator(level)
    logits, deltas = rpn.rpn_head(level)
    boxes, scores = [], []
    for a, s, d in zip(anchors, logits, deltas):
        scores.append(s.permute(0, 2, 3, 1).reshape(1, -1))
        d = d.view(1, -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(-1, 4)
        boxes.append(rpn.box2box_transform.apply_deltas(d, a.tensor).unsqueeze(0))
    rpn_cfg = tcfg.MODEL.RPN
    pre = rpn_cfg.PRE_NMS_TOPK_TRAIN if train else rpn_cfg.PRE_NMS_TOPK_TEST
    post = rpn_cfg.POST_NMS_TOPK_TRAIN if train else rpn_cfg.POST_NMS_TOPK_TEST
    return find_top_rpn_proposals(
        boxes,
        scores,
        images.image_sizes,
        rpn_cfg.NMS_THRESH,
        pre,
        post,
        tcfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
        train,
    )[0]


def _sample(tcfg, proposal_boxes, gt_boxes, gt_classes, num_classes, seed):
    """The ROI head's training sampler by hand: GT appended after the proposals, each RoI
    labelled by its best-IoU GT (background below the threshold), then up to BATCH_SIZE RoIs
    with at most POSITIVE_FRACTION foreground drawn by randperm under ``seed``."""
    heads = tcfg.MODEL.ROI_HEADS
    boxes = torch.cat([proposal_boxes, gt_boxes])
    labels = torch.full((len(boxes),), num_classes, dtype=torch.int64)
    if len(gt_boxes):
        best, which = pairwise_iou(Boxes(gt_boxes), Boxes(boxes)).max(dim=0)
        fg = best >= heads.IOU_THRESHOLDS[0]
        labels[fg] = gt_classes[which[fg]]
    positive = torch.nonzero(labels != num_classes).flatten()
    negative = torch.nonzero(labels == num_classes).flatten()
    num_pos = min(len(positive), int(heads.BATCH_SIZE_PER_IMAGE * heads.POSITIVE_FRACTION))
    num_neg = min(len(negative), heads.BATCH_SIZE_PER_IMAGE - num_pos)
    torch.manual_seed(seed)
    chosen = torch.cat(
        [
            positive[torch.randperm(len(positive))[:num_pos]],
            negative[torch.randperm(len(negative))[:num_neg]],
        ]
    )
    return boxes[chosen], labels[chosen]


def _slow_reference(cfg, json_path, image_dir, protocol, seed=0, indices=None):
    """Per-class means of the protocol's RoIs, computed image by image and RoI by RoI; also the
    (height, width, flipped) each image was seen at."""
    frozen = FrozenTeacher(cfg)
    model, tcfg = frozen.model, frozen.cfg
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    data = json.loads(json_path.read_text())
    cat_ids = sorted(c["id"] for c in data["categories"])
    cat_index = {cat_id: i for i, cat_id in enumerate(cat_ids)}
    sums, counts, seen = {}, {}, []
    for index, image in enumerate(sorted(data["images"], key=lambda im: im["id"])):
        if indices is not None and index not in indices:
            continue
        img = detection_utils.read_image(
            os.path.join(image_dir, image["file_name"]), format=cfg.INPUT.FORMAT
        )
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = torch.tensor(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float64
        ).reshape(-1, 4)
        classes = torch.tensor([cat_index[a["category_id"]] for a in anns], dtype=torch.int64)
        # the augmentation by hand, drawing numpy's numbers in detectron2's order
        np.random.seed(_seed(seed, index))
        h, w = img.shape[:2]
        if protocol == "reference":
            short = int(np.random.choice(cfg.INPUT.MIN_SIZE_TRAIN))
            flip = bool(np.random.uniform(0.0, 1.0) < 0.5)
            max_size = cfg.INPUT.MAX_SIZE_TRAIN
        else:
            short, flip, max_size = cfg.INPUT.MIN_SIZE_TEST, False, cfg.INPUT.MAX_SIZE_TEST
        new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, short, max_size)
        img = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR))
        boxes = boxes * torch.tensor([new_w / w, new_h / h] * 2, dtype=torch.float64)
        if flip:
            img = img[:, ::-1]
            boxes = torch.stack(
                [new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]], dim=1
            )
        boxes = boxes.float()
        seen.append((new_h, new_w, flip))
        tensor = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
        rois = []  # (box, label)
        with torch.no_grad():
            images = model.preprocess_image([{"image": tensor}])
            feats = model.backbone(images.tensor)
            proposals = _proposals(model, tcfg, images, feats, train=protocol == "reference")
            sampled, labels = _sample(
                tcfg,
                proposals.proposal_boxes.tensor,
                boxes,
                classes,
                num_classes,
                _seed(seed, index),
            )
            if protocol == "reference":
                rois = list(zip(sampled, labels.tolist()))
            else:
                rois = list(zip(boxes, classes.tolist()))
                rois += [(b, k) for b, k in zip(sampled, labels.tolist()) if k == num_classes]
            for box, k in rois:
                sums[k] = sums.get(k, 0) + _one_embedding(model, feats, box)
                counts[k] = counts.get(k, 0) + 1
    return {k: (sums[k] / counts[k]).float() for k in sums}, counts, seen


def _assert_equals_reference(table, reference, ref_counts, num_rows=3):
    assert sorted(reference) == list(range(num_rows))
    for k, mean in reference.items():
        assert int(table.counts[k]) == ref_counts[k], k
        torch.testing.assert_close(table.means[k], mean, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the tool
def _run_tool(tmp_path, dataset, json_path, images, *extra, num_classes=2):
    cmd = [
        sys.executable,
        TOOL,
        "--config-file",
        config_path("R50_from_R101_nd.yaml"),
        "--dataset",
        dataset,
        str(json_path),
        str(images),
        *extra,
        *tiny_distill_opts(str(tmp_path), num_classes=num_classes),
        *_dataset_opts(dataset),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny set, its config and the table of each protocol (in this process)."""
    tmp_path = tmp_path_factory.mktemp("means")
    dataset, json_path, images = _dataset(tmp_path)
    cfg = _cfg(tmp_path, dataset)
    tables = {
        p: extract_class_means(cfg, output=str(tmp_path / f"{p}.pth"), protocol=p)
        for p in PROTOCOLS
    }
    return tmp_path, dataset, json_path, images, cfg, tables


def test_one_process_equals_two_processes_and_slow_reference(tiny):
    """The default (reference) protocol: in this process, with two gloo processes and by hand."""
    tmp_path, dataset, json_path, images, cfg, tables = tiny
    one = tables["reference"]
    proc = _run_tool(
        tmp_path,
        dataset,
        json_path,
        images,
        "--num-gpus",
        "2",
        "--output",
        str(tmp_path / "two.pth"),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "ETA" in proc.stdout + proc.stderr  # progress is reported
    two = load_class_means(str(tmp_path / "two.pth"), num_classes=3, dim=64)
    assert two.metadata["protocol"] == "reference"  # the tool's default
    assert torch.equal(one.counts, two.counts)
    torch.testing.assert_close(one.means, two.means, rtol=1e-5, atol=1e-5)

    reference, ref_counts, seen = _slow_reference(cfg, json_path, images, "reference")
    _assert_equals_reference(one, reference, ref_counts)
    # the augmentation really varied: several sizes, flipped and unflipped images
    assert len({(h, w) for h, w, _ in seen}) > 1 and len({f for _, _, f in seen}) == 2
    # every sampled RoI counts: the tiny ROI head samples 32 per image (fewer when proposals
    # run out), far more than the ground-truth boxes
    assert int(one.counts.sum()) > 5 * 16
    meta = one.metadata
    assert meta["augmentation"] == {
        "min_size": [80, 96, 112],
        "max_size": 160,
        "sampling": "choice",
        "flip": "horizontal",
    }
    assert meta["rpn_topk"] == {"mode": "train", "pre_nms": 200, "post_nms": 100}
    assert meta["roi_sampling"]["batch_size_per_image"] == 32
    assert meta["roi_sampling"]["append_gt"] is True
    assert (meta["num_images"], meta["images_in_datasets"], meta["seed"]) == (5, 5, 0)
    assert meta["image_selection"] == "all images"
    assert meta["teacher_weights"] == cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    assert meta["background_row"] == 2 and meta["class_names"][-1] == "background"


def test_gt_boxes_protocol_equals_slow_reference(tiny):
    _, _, json_path, images, cfg, tables = tiny
    table = tables["gt-boxes"]
    reference, ref_counts, seen = _slow_reference(cfg, json_path, images, "gt-boxes")
    _assert_equals_reference(table, reference, ref_counts)
    assert {(h, w, f) for h, w, f in seen} == {(96, 128, False)}  # test scale, no flip
    num_boxes = len(json.loads(json_path.read_text())["annotations"])
    assert int(table.counts[:2].sum()) == num_boxes  # each ground-truth box once
    meta = load_class_means(str(tiny[0] / "gt-boxes.pth")).metadata
    assert meta["protocol"] == "gt-boxes"
    assert meta["augmentation"] == {
        "min_size": [96],
        "max_size": 160,
        "sampling": "choice",
        "flip": "none",
    }
    assert meta["rpn_topk"] == {"mode": "test", "pre_nms": 100, "post_nms": 50}


def test_the_two_protocols_give_different_tables(tiny):
    tables = tiny[-1]
    a, b = tables["reference"].means, tables["gt-boxes"].means
    cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)
    print("per-row cosine reference vs gt-boxes:", [round(float(c), 4) for c in cosine])
    assert not torch.allclose(a, b, rtol=1e-3, atol=1e-3)
    assert float(cosine.min()) < 0.9999  # some row points elsewhere, not just rescaled


def test_max_images_is_a_seeded_subset_independent_of_loader_workers(tiny, tmp_path):
    _, _, json_path, images, cfg, _ = tiny
    table = extract_class_means(
        cfg,
        output=str(tmp_path / "few.pth"),
        max_images=3,
        seed=5,
        num_workers=2,
        allow_empty_classes=True,
    )
    chosen = sorted(np.random.RandomState(5).permutation(5)[:3].tolist())
    reference, ref_counts, _ = _slow_reference(
        cfg, json_path, images, "reference", seed=5, indices=set(chosen)
    )
    _assert_equals_reference(table, reference, ref_counts, num_rows=len(reference))
    assert table.metadata["num_images"] == 3
    assert table.metadata["image_selection"] == "the first 3 of a permutation seeded by 5"


def test_max_images_values():
    assert parse_max_images("all") is None and parse_max_images(None) is None
    assert parse_max_images("7") == 7 and parse_max_images(REFERENCE_NUM_IMAGES) == 60_000
    for bad in ("0", "-3", "many", "2.5"):
        with pytest.raises(DataError, match=r"--max-images .*positive number.*'all'"):
            parse_max_images(bad)


def test_default_output_is_the_config_key_and_training_uses_it(tmp_path):
    dataset, _, _ = _dataset(tmp_path)
    cfg = _cfg(tmp_path, dataset)
    assert not os.path.exists(cfg.MODEL.DISTILL.CLASS_MEANS)
    extract_class_means(cfg)
    table = load_class_means(cfg.MODEL.DISTILL.CLASS_MEANS)
    assert table.means.shape == (3, 64)
    model = build_model(cfg)  # the ND term loads and validates the new file
    torch.testing.assert_close(model.distill_terms[1].class_means, table.means)


# ----------------------------------------------------------------------------- before the pass
def test_class_without_samples_is_an_error_naming_it(tmp_path):
    dataset, json_path, images = _dataset(tmp_path, "means_unicorn", extra_category=True)
    _cfg(tmp_path, dataset, num_classes=3)  # writes the 3-class teacher checkpoint
    proc = _run_tool(tmp_path, dataset, json_path, images, num_classes=3)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert "ERROR: no ground-truth box of class(es) 2 (unicorn) in the " in proc.stderr
    assert "--allow-empty-classes" in proc.stderr
    assert "Extracting" not in proc.stdout + proc.stderr  # found before the pass
    assert not os.path.exists(tmp_path / "class_means.pth")  # nothing half-written


def test_unwritable_output_fails_before_the_pass(tmp_path):
    dataset, json_path, images = _dataset(tmp_path, "means_out")
    _cfg(tmp_path, dataset)
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    target = tmp_path / "blocker" / "means.pth"
    proc = _run_tool(tmp_path, dataset, json_path, images, "--output", str(target))
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert lines == [
        f"ERROR: --output {target} cannot be created: {tmp_path / 'blocker'} is a file"
    ]
    assert "Extracting" not in proc.stdout + proc.stderr


def test_json_output_and_unknown_protocol_are_refused(tiny):
    cfg = tiny[4]
    with pytest.raises(DataError, match=r"--output x\.json: .* give a \.pth path"):
        check_extraction(cfg, output="x.json")
    with pytest.raises(DataError, match=r"--protocol 'roi': use one of reference, gt-boxes"):
        check_extraction(cfg, output="x.pth", protocol="roi")


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
