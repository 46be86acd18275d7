"""The COCO-Distill configs hold the reference's recipe (docs/fidelity.md): the numbers below are
copied from the reference's yaml files (GitHub WangYZ1608/Knowledge-Distillation-via-ND,
Detection/configs/...), each named beside its values."""

import pytest

from nd_det.config import load_config

from .helpers.tiny_distill import config_path

# config -> (losses, {key: value}) with the reference file the values come from
REFERENCE = {
    # ReviewKD++/R50-R101.yaml: NDReviewKD KD_WEIGHT 1.4, ND_WEIGHT 1.0
    "R50_from_R101_nd.yaml": (["reviewkd", "nd"], {"REVIEWKD.WEIGHT": 1.4, "ND.WEIGHT": 1.0}),
    # KD++/R50-R101.yaml: NDKD KD_WEIGHT 1.0, ND_WEIGHT 1.0, T 1.0
    "R50_from_R101_kd_nd.yaml": (
        ["kd", "nd"],
        {"KD.WEIGHT": 1.0, "KD.TEMPERATURE": 1.0, "ND.WEIGHT": 1.0},
    ),
    # ReviewKD/ReviewKD-R50-R101.yaml: REVIEWKD LOSS_WEIGHT 1.0
    "R50_from_R101_reviewkd.yaml": (["reviewkd"], {"REVIEWKD.WEIGHT": 1.0}),
    # DKD/DKD-R50-R101.yaml + model/config.py defaults: ALPHA 1.0, BETA 0.25, T 1.0 (ND added
    # by nd-det: the reference has no DKD++ detection run)
    "R50_from_R101_dkd_nd.yaml": (
        ["dkd", "nd"],
        {"DKD.ALPHA": 1.0, "DKD.BETA": 0.25, "DKD.TEMPERATURE": 1.0, "ND.WEIGHT": 1.0},
    ),
    # ReviewKD++/R18-R101.yaml: KD_WEIGHT 1.2, ND_WEIGHT 1.5 (the code ran ND 1.0, see the yaml)
    "R18_from_R101_nd.yaml": (["reviewkd", "nd"], {"REVIEWKD.WEIGHT": 1.2, "ND.WEIGHT": 1.5}),
    # KD++/R18-R101.yaml: KD_WEIGHT 1.0, ND_WEIGHT 1.5
    "R18_from_R101_kd_nd.yaml": (["kd", "nd"], {"KD.WEIGHT": 1.0, "ND.WEIGHT": 1.5}),
    # ReviewKD++/MV2-R50.yaml: KD_WEIGHT 2.2, ND_WEIGHT 1.5 (the code ran ND 1.0)
    "MV2_from_R50_nd.yaml": (["reviewkd", "nd"], {"REVIEWKD.WEIGHT": 2.2, "ND.WEIGHT": 1.5}),
    # KD++/MV2-R50.yaml: KD_WEIGHT 1.0, ND_WEIGHT 1.0
    "MV2_from_R50_kd_nd.yaml": (["kd", "nd"], {"KD.WEIGHT": 1.0, "ND.WEIGHT": 1.0}),
    "R50_student_only.yaml": ([], {}),
}
R101 = (
    "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
    "detectron2://COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl",
)
R50 = (
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
    "detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl",
)


def _get(node, dotted):
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_losses_and_weights_are_the_references(name):
    cfg = load_config(config_path(name))
    losses, values = REFERENCE[name]
    assert list(cfg.MODEL.DISTILL.LOSSES) == losses
    for key, value in values.items():
        assert _get(cfg.MODEL.DISTILL, key) == pytest.approx(value), key
    teacher = R50 if name.startswith("MV2") else R101
    assert (cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS) == teacher


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_schedule_sampling_and_reviewkd_layout_are_the_references(name):
    cfg = load_config(config_path(name))
    # every reference yaml: 8 images/iteration, LR 0.01, 180k iterations, steps 120k / 160k,
    # multi-scale training 640..800 (Base-Distillation.yaml)
    assert cfg.SOLVER.IMS_PER_BATCH == 8 and cfg.SOLVER.BASE_LR == 0.01
    assert cfg.SOLVER.MAX_ITER == 180000 and tuple(cfg.SOLVER.STEPS) == (120000, 160000)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 672, 704, 736, 768, 800)
    assert cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 512
    assert cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION == 0.25
    assert cfg.MODEL.ROI_BOX_HEAD.FC_DIM == 1024 and cfg.MODEL.ROI_BOX_HEAD.NUM_FC == 2
    # Detection/model/reviewkd.py: 5 ABFs over p2..p6, 256 channels, BatchNorm; 4 GPUs x 2
    # images, so each BatchNorm normalises over 2 images
    reviewkd = cfg.MODEL.DISTILL.REVIEWKD
    assert list(reviewkd.IN_FEATURES) == ["p2", "p3", "p4", "p5", "p6"]
    assert reviewkd.MID_CHANNELS == 256 and reviewkd.NORM == "bn" and reviewkd.BN_IMAGES == 2
    assert cfg.MODEL.DISTILL.ND.INCLUDE_BACKGROUND  # ND over all 512 sampled RoIs


@pytest.mark.parametrize("name", ["MV2_from_R50_nd.yaml", "MV2_from_R50_kd_nd.yaml"])
def test_mobilenetv2_trains_every_layer_with_frozen_batch_norm(name):
    # ReviewKD++/MV2-R50.yaml and KD++/MV2-R50.yaml: MODEL.BACKBONE.FREEZE_AT 0, FrozenBN
    cfg = load_config(config_path(name))
    tv = cfg.MODEL.TORCHVISION
    assert cfg.MODEL.BACKBONE.NAME == "build_torchvision_fpn_backbone"
    assert tv.ARCH == "mobilenet_v2" and tv.WIDTH_MULT == 1.0
    assert tv.FREEZE_AT == 0  # the torchvision builder's 0: every layer trains
    assert tv.NORM == "FrozenBN"
    assert list(tv.OUT_FEATURES) == list(cfg.MODEL.FPN.IN_FEATURES) == ["c2", "c3", "c4", "c5"]
    # what differs: torchvision's ImageNet file as published, hence RGB and ImageNet mean/std
    assert cfg.MODEL.WEIGHTS == "pretrained/mobilenet_v2-b0353104.pth"
    assert cfg.INPUT.FORMAT == "RGB"
    assert list(cfg.MODEL.PIXEL_MEAN) == [123.675, 116.28, 103.53]
    assert list(cfg.MODEL.PIXEL_STD) == [58.395, 57.12, 57.375]
