"""Tiny one-stage students for CPU tests: RetinaNet (yacs, configs/COCO-Distill) and FCOS
(LazyConfig) shrunk to a ResNet-18 with GroupNorm, 32-channel FPN, one tower conv and small
anchors; their teachers written as random-init checkpoints into a folder."""

import os
from collections.abc import Sequence

import torch
from detectron2.config import get_cfg

import nd_det  # noqa: F401  (registers the meta-architectures)
from nd_det import add_distill_config
from nd_det.class_means import ClassMeanAccumulator, save_class_means
from nd_det.modeling import teacher_identity

from .tiny_distill import config_path, write_teacher_checkpoint

RETINANET_CONFIG = "RetinaNet_R50_from_R101_nd.yaml"

# any ResNet-FPN RetinaNet, tiny and finite from random init
TINY_RETINANET_OPTS: list[str] = [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.RESNETS.NORM",
    "GN",
    "MODEL.FPN.NORM",
    "GN",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
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
    return [
        *TINY_RETINANET_OPTS,
        *classes,
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        "",
        "MODEL.DISTILL.REVIEWKD.MID_CHANNELS",
        "32",
        "MODEL.DISTILL.TEACHER_OPTS",
        repr([*TINY_RETINANET_OPTS, *classes, *teacher_opts]),
        "MODEL.DISTILL.TEACHER_WEIGHTS",
        os.path.join(tmp_dir, "teacher.pth"),
        "MODEL.DISTILL.CLASS_MEANS",
        os.path.join(tmp_dir, "class_means.pth"),
        "INPUT.MIN_SIZE_TRAIN",
        "(96,)",
        "INPUT.MAX_SIZE_TRAIN",
        "160",
        "INPUT.MIN_SIZE_TEST",
        "96",
        "INPUT.MAX_SIZE_TEST",
        "160",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "OUTPUT_DIR",
        os.path.join(tmp_dir, "output"),
        *extra_opts,
    ]


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
    os.makedirs(tmp_dir, exist_ok=True)
    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(config_path(RETINANET_CONFIG))
    cfg.merge_from_list(tiny_retinanet_opts(tmp_dir, num_classes, extra_opts, teacher_opts))
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
