"""Teachers from any detectron2 R-CNN: a LazyConfig teacher (the LSJ R50 new baseline with toy
overrides), a Cascade teacher and its chosen stage, a ViTDet-style teacher (its own input format,
statistics and square padding), Mask R-CNN teachers and students, the ND projector for embedding
widths that differ, the new configs built on the meta device, and the wrong inputs (one ERROR
line each, exit 2, nothing written)."""

import json
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from nd_det.class_means import (
    ClassMeanAccumulator,
    load_class_means,
    metadata_mismatches,
    save_class_means,
)
from nd_det.class_means.detection import extract_class_means
from nd_det.config import load_config
from nd_det.data import register_coco_dataset
from nd_det.engine import DistillTrainer
from nd_det.engine.preflight import preflight_distill
from nd_det.errors import ConfigError
from nd_det.export.student import export_student
from nd_det.modeling import FrozenTeacher, TeacherNeeds
from nd_det.modeling.shapes import shapes_of

from .helpers.run_tool import run_tool_in_process
from .helpers.tiny_coco import write_tiny_coco
from .helpers.tiny_distill import REPO, config_path, random_batch, tiny_distill_cfg

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
LSJ_R50 = "new_baselines/mask_rcnn_R_50_FPN_400ep_LSJ.py"
# the LSJ R50 Mask R-CNN at toy size: 2 classes, GroupNorm (sane from random init), a 1-conv
# 1-fc box head of the student's width (64), fewer RoIs and proposals
LSJ_TOY = [
    "model.roi_heads.num_classes=2",
    "model.backbone.bottom_up.stem.norm=GN",
    "model.backbone.bottom_up.stages.norm=GN",
    "model.backbone.norm=GN",
    "model.roi_heads.box_head.conv_dims=[16]",
    "model.roi_heads.box_head.fc_dims=[64]",
    "model.roi_heads.box_predictor.input_shape.channels=64",
    "model.roi_heads.batch_size_per_image=32",
    "model.proposal_generator.pre_nms_topk=[200,100]",
    "model.proposal_generator.post_nms_topk=[100,50]",
]
CASCADE = "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"
# a ViTDet-shaped teacher (detectron2's own common/models/mask_rcnn_vitdet.py: ViT +
# SimpleFeaturePyramid padding every image to a square, RGB, ImageNet mean/std) at toy size
VIT_TOY = """from detectron2.model_zoo import get_config

model = get_config("common/models/mask_rcnn_vitdet.py").model
net = model.backbone.net
net.img_size, net.embed_dim, net.depth, net.num_heads = 64, 32, 1, 2
net.window_block_indexes, net.use_rel_pos = [], False
model.backbone.out_channels = 32
model.backbone.square_pad = 160
model.proposal_generator.head.in_channels = 32
model.roi_heads.num_classes = 2
model.roi_heads.box_head.input_shape.channels = 32
model.roi_heads.box_head.conv_dims = [16]
model.roi_heads.box_head.fc_dims = [64]
model.roi_heads.box_predictor.input_shape.channels = 64
model.roi_heads.mask_head.input_shape.channels = 32
model.roi_heads.mask_head.conv_dims = [16]
"""


def _lazy_opts(config, overrides):
    return ["MODEL.DISTILL.TEACHER_CONFIG", config, "MODEL.DISTILL.TEACHER_OPTS", repr(overrides)]


def _write_means(cfg, teacher, dim=64, seed=0):
    """A class-means file of the right shape carrying ``teacher``'s identity."""
    g = torch.Generator().manual_seed(seed)
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    acc = ClassMeanAccumulator(k, dim)
    acc.update(torch.rand(4 * k, dim, generator=g), torch.arange(k).repeat(4))
    save_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, acc.finalize(dict(teacher.identity)))


def _dataset(root, name, seed, num_images, masks=False):
    json_path, images = write_tiny_coco(root / name, num_images=num_images, seed=seed)
    data = json.loads(json_path.read_text())
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [float(v) for v in ann["bbox"]]
        if masks:  # the shape's box as its polygon
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    json_path.write_text(json.dumps(data))
    register_coco_dataset(name, json_path, images, replace=True)
    return json_path, images


def _train_two_steps(model, cfg):
    optimizer = build_optimizer(cfg, model)
    model.train()
    history = []
    with EventStorage(0):
        for it in range(2):
            losses = model(random_batch(seed=it))
            history.append({k: float(v) for k, v in losses.items()})
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    return history


def _assert_trains_with_nd_and_reviewkd(cfg):
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in model.teacher.model.state_dict().items()}
    history = _train_two_steps(model, cfg)
    for losses in history:
        assert {"loss_nd", "loss_reviewkd"} <= set(losses)
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(
        torch.equal(v, teacher_before[k]) for k, v in model.teacher.model.state_dict().items()
    )
    return model


def _extract(cfg, tmp_path, name):
    _dataset(tmp_path, name, seed=4, num_images=3)
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.DATASETS.TRAIN = (name,)
    run_cfg.DATALOADER.NUM_WORKERS = 0
    output = str(tmp_path / f"{name}_means.pth")
    table = extract_class_means(run_cfg, output=output, max_images=None, allow_empty_classes=True)
    return table, load_class_means(output, num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1, dim=64)


# ----------------------------------------------------------------------------- LazyConfig
def test_lazyconfig_teacher_trains_a_student_and_its_class_means_are_extracted(tmp_path):
    cfg = tiny_distill_cfg(
        str(tmp_path), write_class_means=False, extra_opts=_lazy_opts(LSJ_R50, LSJ_TOY)
    )
    teacher = FrozenTeacher(cfg)
    saved = torch.load(cfg.MODEL.DISTILL.TEACHER_WEIGHTS, weights_only=True)["model"]
    assert teacher.source.lazy and teacher.weights_loaded
    assert all(torch.equal(saved[k], v) for k, v in teacher.model.state_dict().items())
    assert len(teacher.model.roi_heads.box_head.conv_norm_relus) == 1  # conv_dims=[16] applied
    assert not teacher.flip_channels and teacher.embedding_dim == 64
    assert teacher.model.roi_heads.mask_head is not None  # a Mask R-CNN teacher
    _write_means(cfg, teacher)
    _assert_trains_with_nd_and_reviewkd(cfg)

    # --eval-teacher: the LazyConfig teacher in its own format on a box-only set (its masks are
    # predicted but not scored, as the Faster R-CNN student predicts none)
    _dataset(tmp_path, "lazy_val", seed=2, num_images=2)
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.DATASETS.TEST = ("lazy_val",)
    eval_cfg.DATALOADER.NUM_WORKERS = 0
    results = DistillTrainer.evaluate_teacher(eval_cfg)
    assert set(results["lazy_val"]) == {"bbox"}

    table, loaded = _extract(cfg, tmp_path, "lazy_means")
    assert tuple(loaded.means.shape) == (3, 64) and loaded.counts[-1] > 0
    # the protocol's settings come from the LazyConfig teacher's own modules (the overrides)
    assert table.metadata["rpn_topk"] == {"mode": "train", "pre_nms": 200, "post_nms": 100}
    assert table.metadata["roi_sampling"]["batch_size_per_image"] == 32
    assert table.metadata["teacher_config"] == LSJ_R50


def test_vitdet_style_teacher_keeps_its_format_statistics_and_square(tmp_path):
    config = tmp_path / "vit_toy.py"
    config.write_text(VIT_TOY)
    cfg = tiny_distill_cfg(
        str(tmp_path), write_class_means=False, extra_opts=_lazy_opts(str(config), [])
    )
    with torch.device("meta"):  # built off the meta device
        assert FrozenTeacher(cfg, load_weights=False).embedding_dim == 64
    teacher = FrozenTeacher(cfg)
    assert teacher.flip_channels  # BGR student, RGB teacher
    raw = [x["image"].float() for x in random_batch()]
    images = teacher.preprocess(raw)
    assert tuple(images.tensor.shape) == (2, 3, 160, 160)  # its square, not the student's padding
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    expected = (raw[0].flip(0) - mean) / std
    assert torch.allclose(images.tensor[0, :, :96, :128], expected, atol=1e-5)
    assert torch.all(images.tensor[0, :, 96:, :] == 0)


# ----------------------------------------------------------------------------- Cascade
def test_cascade_teacher_uses_the_chosen_stage_for_embeddings_logits_and_means(tmp_path):
    cfg = tiny_distill_cfg(
        str(tmp_path), write_class_means=False, extra_opts=["MODEL.DISTILL.TEACHER_CONFIG", CASCADE]
    )
    last = FrozenTeacher(cfg)
    assert last.box_stage == 2 and last.identity["teacher_box_stage"] == 2
    cfg.defrost()
    cfg.MODEL.DISTILL.TEACHER_CASCADE_STAGE = 1
    cfg.freeze()
    teacher = FrozenTeacher(cfg)
    heads = teacher.model.roi_heads
    images = teacher.preprocess([x["image"].float() for x in random_batch()])
    boxes = [Boxes(torch.tensor([[4.0, 6.0, 60.0, 50.0], [30.0, 20.0, 90.0, 80.0]]))] * 2
    out = teacher.outputs(images, boxes, TeacherNeeds(embeddings=True, logits=True))
    with torch.no_grad():
        pooled = heads.box_pooler([out.features[f] for f in heads.box_in_features], boxes)
        stage1 = heads.box_head[1](pooled)
        assert torch.equal(out.embeddings, stage1)
        assert torch.equal(out.logits, heads.box_predictor[1](stage1)[0])
        assert not torch.allclose(out.embeddings, heads.box_head[2](pooled))
    assert teacher.identity["teacher_box_stage"] == 1

    _write_means(cfg, teacher)
    model = _assert_trains_with_nd_and_reviewkd(cfg)
    assert model.teacher.box_head is model.teacher.model.roi_heads.box_head[1]
    table, _ = _extract(cfg, tmp_path, "cascade_means")
    assert table.metadata["teacher_box_stage"] == 1  # means of the head the terms use
    # training with the last stage would warn that this table comes from another teacher
    assert metadata_mismatches(table, last.identity) == [
        "teacher_box_stage: file has 1, expected 2"
    ]


# ----------------------------------------------------------------------------- Mask R-CNN
def test_mask_student_trains_and_is_evaluated_with_segm_ap(tmp_path):
    _dataset(tmp_path, "mask_train", seed=1, num_images=4, masks=True)
    _dataset(tmp_path, "mask_val", seed=2, num_images=2, masks=True)
    cfg = tiny_distill_cfg(
        str(tmp_path),
        "R50_from_R101_mask_nd.yaml",
        extra_opts=[
            "DATASETS.TRAIN",
            "('mask_train',)",
            "DATASETS.TEST",
            "('mask_val',)",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.MAX_ITER",
            "2",
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
            "16",
        ],
    )
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    teacher_mask_calls = []
    trainer.model.teacher.model.roi_heads.mask_head.register_forward_hook(
        lambda *args: teacher_mask_calls.append(1)
    )
    results = trainer.train()
    assert set(results) == {"bbox", "segm"}
    assert all(k in results["segm"] for k in ("AP", "AP50", "AP75"))
    assert not teacher_mask_calls  # a Mask R-CNN teacher is used for its boxes only
    storage_keys = set(trainer.storage.histories())
    assert {"loss_mask", "loss_nd", "loss_reviewkd"} <= storage_keys


# ----------------------------------------------------------------------------- projector
def test_projector_bridges_embedding_widths_and_the_export_leaves_it_out(tmp_path):
    narrow = ["MODEL.ROI_BOX_HEAD.FC_DIM", "32"]
    cfg = tiny_distill_cfg(str(tmp_path), extra_opts=narrow)
    with pytest.raises(
        ConfigError,
        match=r"student box head gives 32 \(MODEL.ROI_BOX_HEAD."
        r"FC_DIM\), teacher 64\. .* or MODEL.DISTILL.ND.PROJECTOR True",
    ):
        build_model(cfg)
    cfg.defrost()
    cfg.MODEL.DISTILL.ND.PROJECTOR = True
    cfg.freeze()
    model = _assert_trains_with_nd_and_reviewkd(cfg)
    nd = next(t for t in model.distill_terms if t.name == "nd")
    assert tuple(nd.projection[2].weight.shape) == (64, 32)  # BatchNorm1d, Dropout, Linear
    keys = [k for k in model.state_dict() if ".projection." in k]
    assert keys and all(k.startswith("distill_terms.") for k in keys)
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert torch.equal(saved["distill_terms.1.projection.2.weight"], nd.projection[2].weight)

    export = tmp_path / "export"
    export_student(cfg, str(tmp_path / "model_final.pth"), str(export))
    exported = torch.load(export / "model_final.pth", weights_only=True)
    exported = exported.get("model", exported)
    assert not any("distill_terms" in k or "projection" in k for k in exported)
    student = {k: v for k, v in model.state_dict().items() if not k.startswith("distill_terms.")}
    assert exported.keys() == student.keys()


# ----------------------------------------------------------------------------- configs
NEW_CONFIGS = {  # config -> (teacher config, losses, ReviewKD weight, student MASK_ON)
    "R50_from_LSJ_R101_nd.yaml": (
        "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py",
        ["reviewkd", "nd"],
        1.4,
        False,
    ),
    "R50_from_R101_mask_nd.yaml": (
        "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
        ["reviewkd", "nd"],
        0.8,
        True,
    ),
    "R50_from_R101_mask_reviewkd.yaml": (
        "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
        ["reviewkd"],
        0.8,
        True,
    ),
    "R18_from_R101_mask_nd.yaml": (
        "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
        ["reviewkd", "nd"],
        1.5,
        True,
    ),
    "MV2_from_R50_mask_nd.yaml": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
        ["reviewkd", "nd"],
        1.0,
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(NEW_CONFIGS))
def test_new_configs_load_and_build_on_the_meta_device(name):
    cfg = load_config(config_path(name))
    teacher_config, losses, reviewkd, mask_on = NEW_CONFIGS[name]
    assert cfg.MODEL.DISTILL.TEACHER_CONFIG == teacher_config
    assert list(cfg.MODEL.DISTILL.LOSSES) == losses
    assert cfg.MODEL.DISTILL.REVIEWKD.WEIGHT == reviewkd
    assert cfg.MODEL.MASK_ON == mask_on
    if mask_on:  # ReviewKD's Base-Distillation.yaml mask head
        assert cfg.MODEL.ROI_MASK_HEAD.NUM_CONV == 4
        assert cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION == 14
    assert cfg.SOLVER.MAX_ITER == 180000 and cfg.SOLVER.IMS_PER_BATCH == 8
    cfg = cfg.clone()  # the ND term's class means are not there: built without it
    cfg.defrost()
    cfg.MODEL.DISTILL.LOSSES = [n for n in losses if n != "nd"]
    model = preflight_distill(cfg)  # teacher and student on the meta device, once
    teacher, student = model.teacher.shapes, shapes_of(model.backbone, model.roi_heads)
    assert teacher.embedding_dim == student.embedding_dim == 1024
    assert sorted(teacher.levels) == ["p2", "p3", "p4", "p5", "p6"]
    assert all(teacher.levels[f].channels == 256 for f in teacher.levels)


# ----------------------------------------------------------------------------- wrong inputs
@pytest.fixture(scope="module")
def bad_input_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher_cases")
    train_json, train_dir = write_tiny_coco(root / "train", num_images=2, seed=1)
    cfg = tiny_distill_cfg(str(root))
    (root / "no_model.py").write_text("train = dict(max_iter=10)\n")
    vit = root / "vit_toy.py"
    vit.write_text(VIT_TOY.replace("square_pad = 160", "square_pad = 128"))
    argv = [
        "--config-file",
        config_path("R50_from_R101_nd.yaml"),
        "--dataset",
        "teacher_cases_train",
        str(train_json),
        str(train_dir),
        "DATASETS.TRAIN",
        "('teacher_cases_train',)",
        "DATASETS.TEST",
        "()",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "2",
        "MODEL.DISTILL.TEACHER_WEIGHTS",
        cfg.MODEL.DISTILL.TEACHER_WEIGHTS,
        "MODEL.DISTILL.CLASS_MEANS",
        cfg.MODEL.DISTILL.CLASS_MEANS,
        "INPUT.MAX_SIZE_TRAIN",
        "160",
        "INPUT.MAX_SIZE_TEST",
        "160",
    ]
    return root, argv, cfg


TEACHER_CASES = {
    "lazy_no_model": (
        lambda root: _lazy_opts(str(root / "no_model.py"), []),
        "no_model.py has no key 'model'; fix TEACHER_OPTS or the file",
    ),
    "lazy_unknown_key": (
        lambda root: _lazy_opts(LSJ_R50, ["model.roi_heads.num_clases=2"]),
        "MODEL.DISTILL.TEACHER_CONFIG new_baselines/mask_rcnn_R_50_FPN_400ep_LSJ.py has no "
        "key 'model.roi_heads.num_clases'; fix TEACHER_OPTS or the file",
    ),
    "cascade_stage": (
        lambda root: [
            "MODEL.DISTILL.TEACHER_CONFIG",
            CASCADE,
            "MODEL.DISTILL.TEACHER_CASCADE_STAGE",
            "3",
        ],
        "MODEL.DISTILL.TEACHER_CASCADE_STAGE 3: the teacher has 3 box stage(s); give -1 .. 2",
    ),
    "vit_input_size": (
        lambda root: _lazy_opts(str(root / "vit_toy.py"), []),
        "pads images to 128 px squares but INPUT.MAX_SIZE_TRAIN/TEST reach 160: set both to 128 "
        "or less",
    ),
}


@pytest.mark.parametrize("case", sorted(TEACHER_CASES))
def test_teacher_mistake_is_one_line_before_anything_is_written(bad_input_world, tmp_path, case):
    root, argv, cfg = bad_input_world
    overrides, fragment = TEACHER_CASES[case]
    teacher_opts = ["MODEL.DISTILL.TEACHER_OPTS", repr(list(cfg.MODEL.DISTILL.TEACHER_OPTS))]
    out = tmp_path / "out"
    code, stderr = run_tool_in_process(
        TRAIN_NET, argv + teacher_opts + overrides(root) + ["OUTPUT_DIR", str(out)]
    )
    assert code == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and fragment in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert not out.exists()
