"""One-stage students (issue 32.2): detectron2's RetinaNet and FCOS distilled from a teacher of
their kind with ReviewKD on the FPN levels, KD on the per-class sigmoid logits and ND on the
classification tower at the positive anchors; their rows checked against a slow per-anchor
reference, class means against a slow per-image reference, the export against plain
detectron2, every new bad input one line."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import detection_utils
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling import FCOS, RetinaNet, build_model
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import EventStorage
from PIL import Image

from nd_det.class_means.detection import extract_class_means
from nd_det.class_means.table import load_class_means
from nd_det.data import register_coco_dataset
from nd_det.engine.lazy_config import run_view
from nd_det.engine.lazy_export import export_lazy_student
from nd_det.errors import ConfigError, DataError
from nd_det.export import export_student
from nd_det.export.dense_graph import ExportableDenseStudent, dense_student_detections
from nd_det.losses import sigmoid_kd_loss
from nd_det.modeling import DistillFCOS, DistillRetinaNet, plain_student_cfg, student_state_dict
from nd_det.modeling.lazy import plain_student_model

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_dense import tiny_retinanet_cfg, write_tiny_fcos
from .helpers.tiny_distill import random_batch

TERMS = ["MODEL.DISTILL.LOSSES", "['reviewkd', 'kd', 'nd']", "MODEL.DISTILL.MECHANISM_PERIOD", "1"]
DISTILL_KEYS = {"loss_reviewkd", "loss_kd", "loss_nd"}


# ----------------------------------------------------------------------------- slow references
def _labels_by_hand(anchors, gt_boxes, gt_classes, num_classes, low=0.4, high=0.5):
    """RetinaNet's anchor labels written out: background under ``low`` IoU, ignored (-1) up to
    ``high``, the best ground truth's class from ``high`` on and for each ground truth's
    best-overlapping anchors."""
    labels = torch.full((len(anchors),), num_classes, dtype=torch.int64)
    if not len(gt_boxes):
        return labels
    iou = pairwise_iou(Boxes(gt_boxes), Boxes(anchors))
    best, which = iou.max(dim=0)
    labels[(best >= low) & (best < high)] = -1
    foreground = best >= high
    for row in iou:
        foreground |= row == row.max()
    labels[foreground] = gt_classes[which[foreground]]
    return labels


def _at_location(maps, anchors_per_level, anchors_per_location, image, anchor):
    """The (C,) column of the per-level (N, C, H, W) ``maps`` where global anchor ``anchor`` of
    ``image`` lies, found by walking the levels."""
    for level, count in zip(maps, anchors_per_level):
        if anchor < count:
            y, x = divmod(anchor // anchors_per_location, level.shape[-1])
            return level[image, :, y, x]
        anchor -= count
    raise AssertionError("anchor beyond the last level")


def _towers(model, images):
    features = model.backbone(images.tensor)
    maps = [features[f] for f in model.head_in_features]
    return maps, [model.head.cls_subnet(x) for x in maps]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def retinanet(tmp_path_factory):
    root = tmp_path_factory.mktemp("retinanet")
    return root, tiny_retinanet_cfg(str(root), extra_opts=TERMS)


@pytest.fixture(scope="module")
def fcos(tmp_path_factory):
    root = tmp_path_factory.mktemp("fcos")
    return root, LazyConfig.load(write_tiny_fcos(str(root)))


def _assert_same_detections(model, plain):
    """The distillation model in eval mode detects exactly what the plain detector does."""
    batch = random_batch(seed=9, size=(144, 176))
    with torch.no_grad():
        ours, theirs = model.eval()(batch), plain.eval()(batch)
    for a, b in zip(ours, theirs):
        a, b = a["instances"], b["instances"]
        assert len(a) > 0
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_classes, b.pred_classes)


def _steps(model, steps=2, lr=0.01):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    history = []
    with EventStorage(0) as storage:
        for it in range(steps):
            losses = model(random_batch(seed=it))
            history.append({k: float(v) for k, v in losses.items()})
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()
    return history, storage


# ----------------------------------------------------------------------------- the loss
def test_sigmoid_kd_is_the_bernoulli_kl_of_each_class():
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 3 for _ in range(2))
    temperature = 2.0
    ps, pt = torch.sigmoid(s / temperature), torch.sigmoid(t / temperature)
    kl = pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))
    expected = kl.sum(dim=1).mean() * temperature**2
    assert torch.allclose(sigmoid_kd_loss(s, t, temperature), expected, rtol=1e-12)
    assert float(sigmoid_kd_loss(t, t)) == pytest.approx(0.0, abs=1e-12)
    saturated = sigmoid_kd_loss(torch.full((2, 3), -80.0), torch.full((2, 3), 80.0))
    assert torch.isfinite(saturated) and saturated > 100  # log-sigmoid form: no inf
    empty = sigmoid_kd_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3))
    assert float(empty) == 0.0 and empty.requires_grad


# ----------------------------------------------------------------------------- training
def test_retinanet_student_two_steps_then_eval_is_plain_retinanet(retinanet):
    _, cfg = retinanet
    model = build_model(cfg)
    assert isinstance(model, DistillRetinaNet) and model.teacher.one_stage == "RetinaNet"
    teacher = model.teacher.model
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    head_before = model.head.cls_score.weight.clone()

    history, storage = _steps(model)

    for losses in history:
        assert set(losses) == {"loss_cls", "loss_box_reg"} | DISTILL_KEYS
        for key, value in losses.items():
            assert math.isfinite(value) and value > 0, (key, value)
    assert not torch.equal(model.head.cls_score.weight, head_before)
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in model.parameters()}
    assert not [k for k in model.state_dict() if k.startswith("teacher")]
    # ND's mechanism of each step went into the EventStorage (MECHANISM_PERIOD 1)
    for name in ("nd/norm_ratio", "nd/cosine_to_class_mean"):
        values = [v for v, _ in storage.history(name).values()]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name

    # in eval mode the student is detectron2's RetinaNet with the same weights
    plain = build_model(plain_student_cfg(cfg))
    assert type(plain) is RetinaNet
    plain.load_state_dict(student_state_dict(model.state_dict()))
    _assert_same_detections(model, plain)


def test_fcos_lazyconfig_student_two_steps_then_eval_is_plain_fcos(fcos):
    _, cfg = fcos
    model = instantiate(cfg.model)
    assert isinstance(model, DistillFCOS) and type(model.teacher.model) is FCOS
    history, storage = _steps(model)
    for losses in history:
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"} | DISTILL_KEYS
        for key, value in losses.items():
            assert math.isfinite(value) and value > 0, (key, value)
    assert len(storage.history("nd/cosine_to_class_mean").values()) == 2
    plain = instantiate(plain_student_model(cfg.model))
    assert type(plain) is FCOS
    plain.load_state_dict(student_state_dict(model.state_dict()))
    _assert_same_detections(model, plain)
    # the graph torch.export / ONNX see (export/dense_graph.py), centerness included
    image = random_batch(seed=9, size=(144, 176))[0]["image"].float()  # the batch just checked
    with torch.no_grad():
        graph = ExportableDenseStudent(plain)(image)
    for got, want in zip(graph, dense_student_detections(plain, image)):
        assert torch.equal(got, want)


def test_fcos_class_means_average_every_anchor(fcos, tmp_path):
    """An FCOS teacher (a LazyConfig file) labels every anchor (no ignored band): the table
    counts each anchor of each training image once, positives under their class."""
    _, cfg = fcos
    _dataset(tmp_path, "fcos_means")
    run = cfg.copy()
    run.dataloader.train.dataset.names = "fcos_means"
    view = run_view(run).clone()
    view.defrost()
    view.merge_from_list(
        ["INPUT.MIN_SIZE_TRAIN", "(112,)", "INPUT.RANDOM_FLIP", "none", "MODEL.DEVICE", "cpu"]
        + ["DATALOADER.NUM_WORKERS", 0]
    )
    assert (view.MODEL.META_ARCHITECTURE, view.MODEL.RETINANET.NUM_CLASSES) == ("DistillFCOS", 2)
    table = extract_class_means(view, output=str(tmp_path / "fcos_means.pth"))
    teacher = instantiate(plain_student_model(cfg.model))  # the same architecture
    with torch.no_grad():  # 96x128 tiles at a 112 short side: 112x149, padded as in training
        padded = teacher.preprocess_image([{"image": torch.zeros(3, 112, 149)}]).tensor
        features = teacher.backbone(padded)
    anchors = sum(features[f].shape[-2] * features[f].shape[-1] for f in teacher.head_in_features)
    assert int(table.counts.sum()) == 4 * anchors and table.counts[:2].min() > 0
    assert table.means.shape == (3, 32) and torch.isfinite(table.means).all()
    assert table.metadata["anchor_labelling"] == {
        "by": "FCOS.label_anchors",
        "iou_thresholds": [],
        "rows": "every anchor it counts (label >= 0), at its location",
    }

    # the same table through tools/extract_class_means.py on the LazyConfig file itself (the
    # augmentation: its train mapper's, here the same resize as above)
    wrapper = tmp_path / "fcos_extract.py"
    wrapper.write_text(
        "from detectron2.config import LazyCall as L\n"
        "from detectron2.config import LazyConfig\n"
        "from detectron2.data import transforms as T\n"
        f"_cfg = LazyConfig.load({str(fcos[0] / 'tiny_fcos_student.py')!r})\n"
        "model, dataloader = _cfg.model, _cfg.dataloader\n"
        "dataloader.train.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=112)]\n"
        "dataloader.train.num_workers = 0\n"
        "train = dict(device='cpu')\n"
    )
    code, err = run_tool_in_process(
        os.path.join(os.path.dirname(__file__), "..", "tools", "extract_class_means.py"),
        ["--config-file", str(wrapper), "--output", str(tmp_path / "cli.pth")]
        + ["dataloader.train.dataset.names=fcos_means"],
    )
    assert code == 0, err
    cli = load_class_means(str(tmp_path / "cli.pth"))
    assert torch.equal(cli.means, table.means) and torch.equal(cli.counts, table.counts)
    assert cli.metadata["augmentation"] == {
        "augmentations": ["ResizeShortestEdge(short_edge_length=(112, 112))"]
    }


def test_rows_are_the_positive_anchors_at_their_locations(retinanet):
    """ND's rows: each positive anchor (labelled by hand), the student's and the teacher's tower
    output at its location; KD's rows: every anchor the focal loss counts."""
    _, cfg = retinanet
    model = build_model(cfg).train()
    batch = random_batch(seed=4)
    with EventStorage(0), torch.no_grad():
        teacher_images, rows, inputs = model.distill_step_inputs(batch)
        images = model.preprocess_image(batch)
        maps, student_towers = _towers(model, images)
        _, teacher_towers = _towers(model.teacher.model, teacher_images)
        anchors = Boxes.cat(model.anchor_generator(maps)).tensor
        per_level = [x.shape[-2] * x.shape[-1] * 3 for x in maps]  # 1 size x 3 ratios

        labels = [
            _labels_by_hand(anchors, x["instances"].gt_boxes.tensor, x["instances"].gt_classes, 2)
            for x in batch
        ]
        expected = {"labels": [], "student": [], "teacher": []}
        for image, image_labels in enumerate(labels):
            for anchor in torch.nonzero((image_labels >= 0) & (image_labels < 2)).flatten():
                a = int(anchor)
                expected["labels"].append(int(image_labels[a]))
                expected["student"].append(_at_location(student_towers, per_level, 3, image, a))
                expected["teacher"].append(_at_location(teacher_towers, per_level, 3, image, a))
    assert len(expected["labels"]) >= 6  # the tiny anchors give every box a few positives
    assert inputs.labels.tolist() == expected["labels"]
    torch.testing.assert_close(inputs.student_embeddings, torch.stack(expected["student"]))
    torch.testing.assert_close(inputs.teacher_embeddings, torch.stack(expected["teacher"]))
    counted = int(sum((x >= 0).sum() for x in labels))
    assert inputs.student_logits.shape == inputs.teacher_logits.shape == (counted, 2)
    assert inputs.student_embeddings.shape[1] == model.teacher.embedding_dim == 32
    assert set(inputs.student_features) == {"p3", "p4", "p5", "p6", "p7"}


# ----------------------------------------------------------------------------- class means
def _dataset(root, name):
    json_path, images = write_tiny_coco(root / name, num_images=4, seed=3)
    data = json.loads(json_path.read_text())
    for ann in data["annotations"]:  # float boxes, as in COCO
        ann["bbox"] = [float(v) for v in ann["bbox"]]
    json_path.write_text(json.dumps(data))
    register_coco_dataset(name, json_path, images, replace=True)
    return json_path, images


def test_retinanet_class_means_equal_a_slow_per_image_reference(tmp_path):
    json_path, image_dir = _dataset(tmp_path, "onestage_means")
    cfg = tiny_retinanet_cfg(
        str(tmp_path),
        write_class_means=False,
        extra_opts=[
            "DATASETS.TRAIN",
            "('onestage_means',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MIN_SIZE_TRAIN",
            "(112,)",
            "INPUT.RANDOM_FLIP",
            "none",
        ],
    )
    table = extract_class_means(cfg, output=str(tmp_path / "means.pth"))

    model = build_model(plain_student_cfg(cfg))  # a RetinaNet: the teacher's architecture
    DetectionCheckpointer(model).load(cfg.MODEL.DISTILL.TEACHER_WEIGHTS)
    data = json.loads(json_path.read_text())
    sums, counts = torch.zeros(3, 32, dtype=torch.float64), torch.zeros(3, dtype=torch.int64)
    with torch.no_grad():
        for image in sorted(data["images"], key=lambda im: im["id"]):
            img = detection_utils.read_image(image_dir / image["file_name"], format="BGR")
            h, w = img.shape[:2]
            new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, 112, 160)
            img = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR))
            anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
            boxes = torch.tensor(
                [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
            )
            boxes = boxes * torch.tensor([new_w / w, new_h / h] * 2)
            classes = torch.tensor([a["category_id"] - 1 for a in anns])
            tensor = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
            maps, towers = _towers(model.eval(), model.preprocess_image([{"image": tensor}]))
            anchors = Boxes.cat(model.anchor_generator(maps)).tensor
            per_level = [x.shape[-2] * x.shape[-1] * 3 for x in maps]
            labels = _labels_by_hand(anchors, boxes, classes, 2)
            for anchor in torch.nonzero(labels >= 0).flatten().tolist():
                k = int(labels[anchor])
                sums[k] += _at_location(towers, per_level, 3, 0, anchor).double()
                counts[k] += 1
    assert counts[:2].min() > 0 and counts[2] > 100 * counts[:2].sum()
    assert torch.equal(table.counts, counts)
    torch.testing.assert_close(table.means, (sums / counts[:, None]).float(), rtol=1e-5, atol=1e-6)
    meta = table.metadata
    assert meta["embedding"] == "teacher classification-tower output at its anchors"
    assert meta["anchor_labelling"]["iou_thresholds"] == [0.4, 0.5]
    assert meta["augmentation"]["min_size"] == [112] and "rpn_topk" not in meta
    with pytest.raises(DataError, match=r"^--protocol gt-boxes: a RetinaNet teacher has only"):
        extract_class_means(cfg, output=str(tmp_path / "gt.pth"), protocol="gt-boxes")


# ----------------------------------------------------------------------------- export
# plain detectron2 only: a yacs export (config.yaml + weights) and a LazyConfig one
STOCK = r"""
import importlib.abc, os, sys
class RefuseNdDet(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nd_det":
            raise ImportError(name + " imported by the plain-detectron2 process")
sys.meta_path.insert(0, RefuseNdDet())
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
yacs_folder, lazy_folder, batch_file, out_file = sys.argv[1:]
cfg = get_cfg()
cfg.merge_from_file(os.path.join(yacs_folder, "config.yaml"))
models = {"yacs": (build_model(cfg), os.path.join(yacs_folder, cfg.MODEL.WEIGHTS))}
lazy = instantiate(LazyConfig.load(os.path.join(lazy_folder, "config.yaml")).model)
models["lazy"] = (lazy, os.path.join(lazy_folder, "model_final.pth"))
out = {}
for name, (model, weights) in models.items():
    DetectionCheckpointer(model).load(weights)
    with torch.no_grad():
        found = [x["instances"] for x in model.eval()(torch.load(batch_file))]
    found = [(x.pred_boxes.tensor, x.scores, x.pred_classes) for x in found]
    out[name] = (type(model).__name__, found)
torch.save(out, out_file)
"""


def _save_trained(model, folder) -> str:
    _steps(model, steps=1)
    folder.mkdir()
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    return str(folder / "model_final.pth")


def test_exports_give_the_same_detections_in_plain_detectron2(retinanet, fcos, tmp_path):
    """RetinaNet through tools/export_student.py's export (yacs), FCOS through the LazyConfig
    export, both loaded in a process that refuses to import nd_det."""
    _, retinanet_cfg = retinanet
    _, fcos_cfg = fcos
    students = {"yacs": build_model(retinanet_cfg), "lazy": instantiate(fcos_cfg.model)}
    weights = {k: _save_trained(m, tmp_path / k) for k, m in students.items()}
    exported = export_student(retinanet_cfg, weights["yacs"], str(tmp_path / "yacs_export"))
    assert exported.dropped_modules and all(
        k.startswith("distill_terms.") for k in exported.dropped_modules
    )
    text = (tmp_path / "yacs_export" / "config.yaml").read_text()
    assert "META_ARCHITECTURE: RetinaNet" in text and "DISTILL" not in text
    lazy = export_lazy_student(fcos_cfg, weights["lazy"], str(tmp_path / "lazy_export"))
    assert (
        lazy.dropped_modules
        and "teacher" not in (tmp_path / "lazy_export" / "config.yaml").read_text()
    )

    batch = [{"image": x["image"]} for x in random_batch(seed=7, size=(144, 176))]
    torch.save(batch, tmp_path / "batch.pt")
    script = tmp_path / "stock.py"
    script.write_text(STOCK)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    folders = [tmp_path / "yacs_export", tmp_path / "lazy_export"]
    args = [str(f) for f in folders] + [str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")]
    proc = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stock = torch.load(tmp_path / "out.pt", weights_only=False)
    assert {k: v[0] for k, v in stock.items()} == {"yacs": "RetinaNet", "lazy": "FCOS"}
    for name, model in students.items():
        with torch.no_grad():
            ours = [x["instances"] for x in model.eval()(batch)]
        for a, (boxes, scores, classes) in zip(ours, stock[name][1]):
            assert len(a) > 0
            assert len(a) == len(boxes) and torch.equal(a.pred_classes, classes), name
            torch.testing.assert_close(a.pred_boxes.tensor, boxes, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(a.scores, scores, rtol=1e-5, atol=1e-6)

    with pytest.raises(ConfigError, match=r"is the teacher's checkpoint"):
        export_student(
            retinanet_cfg, retinanet_cfg.MODEL.DISTILL.TEACHER_WEIGHTS, str(tmp_path / "again")
        )


def test_a_lazyconfig_fcos_export_goes_through_export_model(fcos, tmp_path, capsys):
    """The LazyConfig export records the test input (the model's input_format, the test
    mapper's resize); tools/export_model.py reads it and checks the pt2 file at two sizes against
    detectron2's FCOS inference (pt2 and ONNX); a folder without that record is one line."""
    import copy

    from nd_det.export.contract import load_exported_student

    from .helpers.run_tool import run_tool_in_process
    from .helpers.toy_export import write_image

    cfg = copy.deepcopy(fcos[1])
    resize = cfg.dataloader.test.mapper.augmentations[0]
    resize.short_edge_length, resize.max_size = 144, 200  # p7: 129 px at least
    weights = _save_trained(instantiate(cfg.model), tmp_path / "run")
    folder = tmp_path / "lazy_export"
    export_lazy_student(cfg, weights, str(folder))
    image = write_image(tmp_path / "tile.png", 150, 200, seed=3)
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "export_model.py")
    code, err = run_tool_in_process(
        tool, ["--export-dir", str(folder), "--format", "pt2", "onnx", "--image", image]
    )
    assert code == 0, err
    printed = capsys.readouterr().out
    for fmt in ("pt2", "onnx"):
        assert f"model.{fmt}.json: {fmt} export" in printed
        with open(folder / f"model.{fmt}.json", encoding="utf-8") as f:
            record = json.load(f)
        assert record["input"]["channel_order"] == cfg.dataloader.test.mapper.image_format == "BGR"
        assert record["input"]["resize"] == {"shortest_side": 144, "longest_side_at_most": 200}
        assert [c["input_size"] for c in record["check"]["sizes"]] == [[144, 192], [192, 256]]
        assert all(c["detections"] > 0 for c in record["check"]["sizes"])

    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text[: text.index("input:")] + text[text.index("model:") :])
    with pytest.raises(ConfigError, match=r"no test input in its config.yaml: export again"):
        load_exported_student(str(folder))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "case, opts, message",
    [
        (
            "two-stage teacher",
            ["MODEL.DISTILL.TEACHER_CONFIG", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"],
            r"^the teacher \(COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml\) is a GeneralizedRCNN: "
            r"use a RetinaNet teacher for a RetinaNet student$",
        ),
        (
            "other classes",
            ["MODEL.RETINANET.NUM_CLASSES", "3"],
            r"^the teacher .* has 2 classes, MODEL.RETINANET.NUM_CLASSES 3: use a teacher",
        ),
        (
            "softmax-only term",
            ["MODEL.DISTILL.LOSSES", "['dkd']"],
            r"^MODEL.DISTILL.LOSSES 'dkd': no form for per-class sigmoid logits \(one-stage\); "
            r"use 'kd'$",
        ),
    ],
)
def test_bad_one_stage_configs_are_one_line(retinanet, case, opts, message):
    _, cfg = retinanet
    bad = cfg.clone()
    bad.defrost()
    bad.merge_from_list(opts)
    with torch.device("meta"), pytest.raises(ConfigError, match=message) as error:
        build_model(bad)
    assert "\n" not in str(error.value)


def test_teacher_with_other_anchors_is_one_line(tmp_path):
    cfg = tiny_retinanet_cfg(
        str(tmp_path),
        extra_opts=TERMS,
        teacher_opts=["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]"],
    )
    with pytest.raises(
        ConfigError,
        match=r"^the teacher .* has anchors \(\(8, 16, 32, 64, 128\), 1, 32\), the student "
        r"\(\(8, 16, 32, 64, 128\), 3, 32\) \(level strides, anchors per location, padding\)",
    ) as error:
        build_model(cfg)
    assert "\n" not in str(error.value)


def test_kd_of_a_one_stage_student_is_sigmoid_kd_of_its_rows(retinanet):
    _, cfg = retinanet
    model = build_model(cfg).train()
    with EventStorage(0), torch.no_grad():
        inputs = model.distill_step_inputs(random_batch(seed=2))[2]
    kd = next(t for t in model.distill_terms if t.name == "kd")
    expected = sigmoid_kd_loss(inputs.student_logits, inputs.teacher_logits, kd.temperature)
    assert float(kd(inputs)) == pytest.approx(float(expected) * kd.weight, rel=1e-6)
    softmax = F.kl_div(
        F.log_softmax(inputs.student_logits, 1),
        F.log_softmax(inputs.teacher_logits, 1),
        log_target=True,
        reduction="batchmean",
    )
    assert float(kd(inputs)) != pytest.approx(float(softmax))
