"""Tiny, fast DistillRCNN set-ups for CPU tests: small widths, GroupNorm, few RoIs.

``tiny_distill_cfg(tmp_dir, config_file)`` takes a real COCO-Distill config, shrinks student and
teacher with overrides, writes a (random-init) teacher checkpoint and a matching class-means file
into ``tmp_dir`` and returns the frozen-able cfg.
"""

import os
from collections.abc import Sequence
from typing import Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg

import nd_det  # noqa: F401  (registers DistillRCNN and backbones)
from nd_det import add_distill_config
from nd_det.class_means import ClassMeanAccumulator, save_class_means
from nd_det.modeling import FrozenTeacher, teacher_identity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs", "COCO-Distill")

# A ResNet-18-FPN with GroupNorm and 32 channels: tiny, and sane from random init.
TINY_BACKBONE_OPTS: list[str] = [
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
]

# Overrides that make any ResNet-FPN Faster R-CNN tiny and finite from random init.
TINY_MODEL_OPTS: list[str] = TINY_BACKBONE_OPTS + [
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "[[8], [16], [32], [64], [128]]",
    "MODEL.BACKBONE.FREEZE_AT",
    "0",
]


def _opts_with_classes(num_classes: int, extra: Sequence[str] = ()) -> list[str]:
    return TINY_MODEL_OPTS + ["MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)] + list(extra)


def tiny_run_opts(tmp_dir: str, teacher_opts: Sequence[str]) -> list[str]:
    """The tiny configs' run overrides: CPU, no student weights, the teacher (``teacher_opts``,
    weights) and class means in ``tmp_dir``, small images, 2 images per step."""
    return [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        "",
        "MODEL.DISTILL.REVIEWKD.MID_CHANNELS",
        "32",
        "MODEL.DISTILL.TEACHER_OPTS",
        repr(list(teacher_opts)),
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
    ]


def tiny_distill_opts(
    tmp_dir: str,
    num_classes: int = 2,
    extra_opts: Sequence[str] = (),
    teacher_opts: Sequence[str] = (),
) -> list[str]:
    """Command-line style overrides (KEY VALUE ...) that shrink a COCO-Distill config for CPU
    tests and point the teacher weights / class means into ``tmp_dir``."""
    return (
        _opts_with_classes(num_classes)
        + tiny_run_opts(tmp_dir, _opts_with_classes(num_classes, teacher_opts))
        + list(extra_opts)
    )


def tiny_cfg(tmp_dir: str, config_file: str, opts: Sequence[str]):
    """detectron2's defaults + nd-det's keys + ``configs/COCO-Distill/<config_file>`` + the
    tiny ``opts``; ``tmp_dir`` made."""
    os.makedirs(tmp_dir, exist_ok=True)
    cfg = add_distill_config(get_cfg())
    cfg.merge_from_file(config_path(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def tiny_distill_cfg(
    tmp_dir: str,
    config_file: str = "R50_from_R101_nd.yaml",
    num_classes: int = 2,
    extra_opts: Sequence[str] = (),
    teacher_opts: Sequence[str] = (),
    write_class_means: bool = True,
    seed: int = 0,
):
    """A cfg from ``configs/COCO-Distill/<config_file>`` shrunk for CPU tests, with a teacher
    checkpoint and class-means file written under ``tmp_dir``."""
    cfg = tiny_cfg(
        tmp_dir, config_file, tiny_distill_opts(tmp_dir, num_classes, extra_opts, teacher_opts)
    )
    write_teacher_checkpoint(cfg, seed=seed)
    if write_class_means:
        write_random_class_means(cfg, seed=seed)
    return cfg


def config_path(config_file: str) -> str:
    return config_file if os.path.isabs(config_file) else os.path.join(CONFIG_DIR, config_file)


def write_teacher_checkpoint(cfg, seed: int = 0) -> str:
    """Build the teacher of ``cfg`` (yacs or LazyConfig) with random weights and save it where
    cfg expects it."""
    torch.manual_seed(seed)
    teacher = FrozenTeacher(cfg, load_weights=False).model
    path = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    folder, name = os.path.split(path)
    DetectionCheckpointer(teacher, save_dir=folder).save(os.path.splitext(name)[0])
    return path


def write_random_class_means(cfg, seed: int = 0, dim: Optional[int] = None) -> str:
    """A class-means file of the right shape for ``cfg`` (random positive means)."""
    g = torch.Generator().manual_seed(seed)
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    if dim is None:
        with torch.device("meta"):
            dim = FrozenTeacher(cfg, load_weights=False).embedding_dim
    acc = ClassMeanAccumulator(k, dim)
    acc.update(torch.rand(4 * k, dim, generator=g), torch.arange(k).repeat(4))
    save_class_means(cfg.MODEL.DISTILL.CLASS_MEANS, acc.finalize(teacher_identity(cfg)))
    return cfg.MODEL.DISTILL.CLASS_MEANS


def random_batch(
    num_images: int = 2,
    size=(96, 128),
    num_classes: int = 2,
    seed: int = 0,
    empty: Sequence[int] = (),
):
    """detectron2-style training inputs with random images and a few GT boxes each (none for
    the indices in ``empty``)."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = size
    batch = []
    for i in range(num_images):
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        inst = Instances((h, w))
        n = 0 if i in empty else 3
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 12 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
        batch.append({"image": image, "instances": inst, "height": h, "width": w})
    return batch
