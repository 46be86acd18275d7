"""Tiny one-stage students for CPU tests: RetinaNet (yacs, configs/COCO-Distill) and FCOS
(LazyConfig) shrunk to a ResNet-18 with GroupNorm, 32-channel FPN, one tower conv and small
anchors; their teachers written as random-init checkpoints into a folder."""

import os
from collections.abc import Sequence

import torch

import nd_det  # noqa: F401  (registers the meta-architectures)
from nd_det.class_means import ClassMeanAccumulator, save_class_means
from nd_det.modeling import teacher_identity

from .tiny_distill import (
    TINY_BACKBONE_OPTS,
    config_path,
    tiny_cfg,
    tiny_run_opts,
    write_teacher_checkpoint,
)

RETINANET_CONFIG = "RetinaNet_R50_from_R101_nd.yaml"

# any ResNet-FPN RetinaNet, tiny and finite from random init
TINY_RETINANET_OPTS: list[str] = TINY_BACKBONE_OPTS + [
    "MODEL.RETINANET.NUM_CONVS",
    "1",
    "MODEL.RETINANET.NORM",
    "",  # GroupNorm of 32 channels over a 1x1 p7 map of one image has one value per group
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "0.005",
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
    "100",
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "[[8], [16], [32], [64], [128]]",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "[[0.5, 1.0, 2.0]]",
    "MODEL.BACKBONE.FREEZE_AT",
    "0",
]


def tiny_retinanet_opts(
    tmp_dir: str, num_classes: int = 2, extra_opts: Sequence[str] = (), teacher_opts=()
) -> list[str]:
    """KEY VALUE overrides that shrink a one-stage COCO-Distill config and point the teacher
    weights / class means into ``tmp_dir``."""
    classes = ["MODEL.RETINANET.NUM_CLASSES", str(num_classes)]
    teacher = [*TINY_RETINANET_OPTS, *classes, *teacher_opts]
    return [*TINY_RETINANET_OPTS, *classes, *tiny_run_opts(tmp_dir, teacher), *extra_opts]


def tiny_retinanet_cfg(
    tmp_dir: str,
    num_classes: int = 2,
    extra_opts: Sequence[str] = (),
    teacher_opts: Sequence[str] = (),
    write_class_means: bool = True,
    seed: int = 0,
):
    """configs/COCO-Distill/RetinaNet_R50_from_R101_nd.yaml shrunk for CPU tests, with a teacher
    checkpoint (and a random class-means table) written under ``tmp_dir``."""
    opts = tiny_retinanet_opts(tmp_dir, num_classes, extra_opts, teacher_opts)
    cfg = tiny_cfg(tmp_dir, RETINANET_CONFIG, opts)
    write_teacher_checkpoint(cfg, seed=seed)
    if write_class_means:
        write_random_means(
            cfg.MODEL.DISTILL.CLASS_MEANS, num_classes + 1, 32, teacher_identity(cfg)
        )
    return cfg


def write_random_means(path: str, rows: int, dim: int, identity: dict, seed: int = 0) -> str:
    """A class-means table of ``rows`` x ``dim`` random positive means at ``path``."""
    g = torch.Generator().manual_seed(seed)
    acc = ClassMeanAccumulator(rows, dim)
    acc.update(torch.rand(4 * rows, dim, generator=g), torch.arange(rows).repeat(4))
    save_class_means(path, acc.finalize(identity))
    return path


FCOS_CONFIG = os.path.join(
    os.path.dirname(config_path(RETINANET_CONFIG)), "FCOS_R50_from_R101_nd.py"
)
# detectron2's FCOS recipe shrunk as TINY_RETINANET_OPTS shrinks a RetinaNet (its head keeps
# detectron2's GroupNorm: the test images keep the 1x1 p7 map of one image away from it)
_TINY_FCOS = """from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling import ResNet

{load}
_bottom_up = model.backbone.bottom_up
_bottom_up.stem.norm = "GN"
_bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="GN")
_bottom_up.freeze_at = 0
model.backbone.norm = "GN"
model.backbone.out_channels = 32
model.backbone.top_block.in_channels = 32
model.head.input_shape = [ShapeSpec(channels=32)] * 5
model.head.conv_dims = [32]
model.num_classes = 2
model.test_score_thresh = 0.05
model.test_topk_candidates = 100
{extra}
"""


def write_tiny_fcos(root: str, num_classes: int = 2) -> str:
    """A tiny FCOS teacher config (a LazyConfig file), its random-init checkpoint and class-means
    table, and the tiny LazyConfig of configs/COCO-Distill/FCOS_R50_from_R101_nd.py distilled
    from it, under ``root``; returns the student's config file."""
    from detectron2.checkpoint import DetectionCheckpointer

    from nd_det.modeling import FrozenTeacher

    teacher_file = os.path.join(root, "tiny_fcos_teacher.py")
    with open(teacher_file, "w", encoding="utf-8") as f:
        load = 'model = get_config("COCO-Detection/fcos_R_50_FPN_1x.py").model'
        f.write(_TINY_FCOS.format(load=load, extra=""))
    weights = os.path.join(root, "fcos_teacher.pth")
    means = os.path.join(root, "fcos_class_means.pth")
    torch.manual_seed(0)
    teacher = FrozenTeacher.from_values(
        config=teacher_file, num_classes=num_classes, one_stage="FCOS", weights=weights
    )
    DetectionCheckpointer(teacher.model, save_dir=root).save("fcos_teacher")
    write_random_means(means, num_classes + 1, 32, dict(teacher.identity))
    student_file = os.path.join(root, "tiny_fcos_student.py")
    extra = "\n".join(
        [
            f"model.teacher.config = {teacher_file!r}",
            f"model.teacher.weights = {weights!r}",
            "model.teacher.opts = []",
            "model.teacher.max_input_size = 160",
            f"model.distill_terms.class_means = {means!r}",
            "model.distill_terms.reviewkd.mid_channels = 32",
            "model.distill_terms.losses = ['reviewkd', 'kd', 'nd']",
            "model.mechanism_period = 1",
        ]
    )
    with open(student_file, "w", encoding="utf-8") as f:
        load = f"_cfg = LazyConfig.load({FCOS_CONFIG!r})\n"
        load += "model, dataloader = _cfg.model, _cfg.dataloader"
        f.write(_TINY_FCOS.format(load=load, extra=extra))
    return student_file
