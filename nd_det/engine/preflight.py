"""Everything a detection run can check before any model is built and before anything is written
to OUTPUT_DIR, in the parent process, before any worker starts (docs/reliability.md).

Each check raises one :class:`~nd_det.errors.UserError` naming the key, flag or file, what is
wrong and the fix.  The teacher's own checks live in :class:`~nd_det.modeling.FrozenTeacher`,
the distillation terms' in their ``check`` methods; this module calls them in order, cheapest
first: the command line and the config, the datasets, OUTPUT_DIR, the models' shapes (built on
PyTorch's meta device: no weights, no memory), every image of the datasets (decoded once and
compared with its JSON, :mod:`nd_det.data.image_scan`), the files (class means, weights: a URL is
downloaded now, once, so a network failure is reported before hours of work), the checkpoint to
resume from.
"""

import logging
import math

import torch
from detectron2.config import CfgNode

from ..data.image_scan import scan_registered_datasets
from ..errors import ConfigError, UserError
from ..modeling.backbone import check_resnet_basic_config, check_torchvision_config
from ..modeling.bn_groups import bn_group_size
from ..modeling.distill_terms import NDTerm, check_distill_loss_names, check_distill_terms
from ..modeling.meta_arch import check_student_heads
from ..modeling.shapes import shapes_from_config, state_shapes_from_config
from ..modeling.student_checkpoint import (
    model_state_mismatch,
    plain_student_cfg,
    read_model_state,
    student_mismatch_message,
    student_state_dict,
)
from ..modeling.teacher import FrozenTeacher, resolve_teacher_weights
from ..modeling.weights import local_weights_file
from ..utils.paths import check_writable
from ..utils.seed import config_seed_problem
from ..utils.text import first_line
from .checkpoint import check_checkpoint_file, resume_checkpoint
from .setup import check_datasets
from .trainer import amp_precision

__all__ = [
    "preflight_distill",
    "check_launch",
    "check_training_config",
    "check_datasets",
    "check_backbone_config",
    "check_train_run",
    "check_eval_run",
]

logger = logging.getLogger(__name__)

_INPUT_FORMATS = ("BGR", "RGB", "L", "YUV-BT.601")


def world_size(args) -> int:
    return int(args.num_gpus) * int(args.num_machines)


def check_launch(cfg: CfgNode, args) -> None:
    """The launch options against the machine and MODEL.DEVICE."""
    if args.num_gpus < 1 or args.num_machines < 1:
        raise UserError(
            f"--num-gpus {args.num_gpus} --num-machines {args.num_machines}: give 1 "
            "or more of each (--num-gpus is the number of processes per machine)"
        )
    if not 0 <= args.machine_rank < args.num_machines:
        raise UserError(
            f"--machine-rank {args.machine_rank}: give 0 .. {args.num_machines - 1} "
            f"(--num-machines {args.num_machines})"
        )
    device = str(cfg.MODEL.DEVICE)
    if device.startswith("cuda"):
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise ConfigError(
                f"MODEL.DEVICE {device}: torch sees no CUDA device on this machine; add "
                "MODEL.DEVICE cpu to the command (CPU training, --num-gpus processes on gloo)"
            )
        if args.num_gpus > available:
            raise UserError(
                f"--num-gpus {args.num_gpus}: this machine has {available} CUDA "
                f"device(s); give --num-gpus {available} or fewer"
            )
    elif device != "cpu":
        raise ConfigError(f"MODEL.DEVICE {device!r}: use cuda or cpu")


def check_training_config(cfg: CfgNode, args) -> None:
    """Solver, loader and input keys whose bad values would fail (or silently misbehave) deep
    inside detectron2."""
    world = world_size(args)
    solver = cfg.SOLVER
    if solver.IMS_PER_BATCH < world or solver.IMS_PER_BATCH % world:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {solver.IMS_PER_BATCH} is not divisible by the {world} "
            f"processes (--num-gpus {args.num_gpus} x --num-machines {args.num_machines}): set it "
            f"to a multiple of {world}, e.g. {world * max(1, solver.IMS_PER_BATCH // world)}"
        )
    if solver.MAX_ITER < 1:
        raise ConfigError(f"SOLVER.MAX_ITER {solver.MAX_ITER}: give 1 or more iterations")
    seed_problem = config_seed_problem(cfg.SEED, world)
    if seed_problem:
        raise ConfigError(seed_problem)
    if solver.CHECKPOINT_PERIOD < 1:
        raise ConfigError(
            f"SOLVER.CHECKPOINT_PERIOD {solver.CHECKPOINT_PERIOD}: give 1 or more "
            "(iterations between checkpoints)"
        )
    if not (math.isfinite(solver.BASE_LR) and solver.BASE_LR > 0):
        raise ConfigError(f"SOLVER.BASE_LR {solver.BASE_LR}: give a positive learning rate")
    if cfg.TEST.EVAL_PERIOD < 0:
        raise ConfigError(
            f"TEST.EVAL_PERIOD {cfg.TEST.EVAL_PERIOD}: give 0 (evaluate at the "
            "end) or a positive number of iterations"
        )
    if solver.AMP.ENABLED and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        raise ConfigError(
            "SOLVER.AMP.ENABLED True needs a CUDA device (MODEL.DEVICE "
            f"{cfg.MODEL.DEVICE}): set SOLVER.AMP.ENABLED False on the CPU"
        )
    amp_precision(solver.AMP.PRECISION)  # the trainer's own check of the name
    check_loader_and_input(cfg)


def check_loader_and_input(cfg: CfgNode) -> None:
    if cfg.DATALOADER.NUM_WORKERS < 0:
        raise ConfigError(
            f"DATALOADER.NUM_WORKERS {cfg.DATALOADER.NUM_WORKERS}: give 0 (load "
            "in the training process) or more"
        )
    if cfg.INPUT.FORMAT not in _INPUT_FORMATS:
        raise ConfigError(f"INPUT.FORMAT {cfg.INPUT.FORMAT!r}: use one of {list(_INPUT_FORMATS)}")
    channels = 1 if cfg.INPUT.FORMAT == "L" else 3
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        if len(cfg.MODEL[key]) != channels:
            raise ConfigError(
                f"MODEL.{key} has {len(cfg.MODEL[key])} values but INPUT.FORMAT "
                f"{cfg.INPUT.FORMAT} images have {channels} channel(s)"
            )
    if any(s <= 0 for s in cfg.MODEL.PIXEL_STD):
        raise ConfigError(
            f"MODEL.PIXEL_STD {list(cfg.MODEL.PIXEL_STD)}: every value must be positive"
        )


def check_backbone_config(cfg: CfgNode) -> None:
    """The keys of nd-det's / detectron2's small-student backbones, named one by one."""
    name = cfg.MODEL.BACKBONE.NAME
    if "resnet" in name and cfg.MODEL.RESNETS.DEPTH in (18, 34):
        check_resnet_basic_config(cfg)
    if name == "build_torchvision_fpn_backbone":
        check_torchvision_config(cfg)


def _is_distillation(cfg: CfgNode) -> bool:
    return bool(cfg.MODEL.DISTILL.LOSSES)


def check_meta_architecture(cfg: CfgNode) -> None:
    arch = cfg.MODEL.META_ARCHITECTURE
    if _is_distillation(cfg) and arch != "DistillRCNN":
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE is {arch} but MODEL.DISTILL.LOSSES is "
            f"{list(cfg.MODEL.DISTILL.LOSSES)}: that run would train a plain detector and no "
            "distillation. Set MODEL.META_ARCHITECTURE DistillRCNN (the configs/COCO-Distill "
            "files do), or MODEL.DISTILL.LOSSES '[]' to train the detector alone"
        )


def _checked_teacher_config(cfg: CfgNode):
    """The teacher's config (FrozenTeacher's config checks), with nd-det's backbone keys of a
    yacs teacher named one by one (a LazyConfig teacher has no such keys)."""
    teacher_cfg = FrozenTeacher.teacher_config(cfg)
    if isinstance(teacher_cfg, CfgNode):
        check_backbone_config(teacher_cfg)
    return teacher_cfg


def preflight_distill(cfg: CfgNode, need_class_means: bool = True):
    """The distillation set-up without building anything: loss names, student heads, the
    teacher's config and weights file, both models' shapes against the terms, and the
    class-means file (when ND is on).  Returns the teacher's config (a yacs CfgNode, or the
    LazyConfig of a .py teacher; None without distillation)."""
    if not _is_distillation(cfg):
        return None
    check_distill_loss_names(cfg.MODEL.DISTILL.LOSSES)
    check_student_heads(cfg)
    teacher_cfg = _checked_teacher_config(cfg)
    student = shapes_from_config(plain_student_cfg(cfg), "the student (this config)")
    teacher = FrozenTeacher.shapes_from_config(cfg)  # every check of its meta-device model
    resolve_teacher_weights(cfg)
    check_distill_terms(cfg, student, teacher)
    if need_class_means and "nd" in cfg.MODEL.DISTILL.LOSSES:
        NDTerm.class_means_table(cfg, teacher.embedding_dim)  # the term's own reading
    return teacher_cfg


def check_student_weights_file(cfg: CfgNode) -> None:
    """MODEL.WEIGHTS to evaluate: present (downloaded now if a URL), complete, and holding
    exactly the student of ``cfg`` (a DistillRCNN checkpoint's distill_terms.* are dropped)."""
    local = local_weights_file("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)
    check_checkpoint_file(local, "MODEL.WEIGHTS")
    try:
        state = student_state_dict(read_model_state(local))
    except Exception as e:  # noqa: BLE001 - unreadable files fail in many exception types
        raise ConfigError(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} is not a detectron2 checkpoint "
            f"({first_line(e)}): give the model_final.pth a training run wrote"
        ) from None
    expected = state_shapes_from_config(plain_student_cfg(cfg), "the student (this config)")
    problems = model_state_mismatch(expected, state)
    if problems:
        raise ConfigError(student_mismatch_message("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS, problems))


def check_train_run(cfg: CfgNode, args) -> None:
    """tools/train_net.py without --eval-only."""
    check_launch(cfg, args)
    check_training_config(cfg, args)
    check_meta_architecture(cfg)
    check_datasets(cfg)
    check_writable(cfg.OUTPUT_DIR, "OUTPUT_DIR", folder=True)
    check_backbone_config(cfg)
    if _is_distillation(cfg):
        preflight_distill(cfg)  # the student's heads and shapes against the teacher's
        if "reviewkd" in cfg.MODEL.DISTILL.LOSSES and cfg.MODEL.DISTILL.REVIEWKD.NORM == "bn":
            bn_group_size(
                int(cfg.MODEL.DISTILL.REVIEWKD.BN_IMAGES),
                int(cfg.SOLVER.IMS_PER_BATCH),
                world_size(args),
            )
    else:
        shapes_from_config(plain_student_cfg(cfg), "the student (this config)")
    scan_registered_datasets([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])  # --dataset ones: done
    if args.resume:
        resume_checkpoint(cfg.OUTPUT_DIR)  # names the file it will use, or stops
    elif cfg.MODEL.WEIGHTS:
        local_weights_file("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)
    if _is_distillation(cfg):
        # downloaded now if a URL: a network failure is one line before any model is built
        FrozenTeacher.check_weights_file(cfg)


def check_eval_run(cfg: CfgNode, args) -> None:
    """tools/train_net.py --eval-only [--eval-teacher]."""
    check_launch(cfg, args)
    check_loader_and_input(cfg)
    check_datasets(cfg, splits=("TEST",), required=("TEST",))
    check_writable(cfg.OUTPUT_DIR, "OUTPUT_DIR", folder=True)
    check_backbone_config(cfg)
    shapes_from_config(plain_student_cfg(cfg), "the student (this config)")
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError(
            "--eval-only needs MODEL.WEIGHTS, the student checkpoint to evaluate (e.g. "
            "MODEL.WEIGHTS output/<run>/model_final.pth); without it the AP would be that of a "
            "randomly initialised model"
        )
    check_student_weights_file(cfg)
    if args.eval_teacher:
        _checked_teacher_config(cfg)
        FrozenTeacher.check(cfg)
        FrozenTeacher.check_weights_file(cfg)
    scan_registered_datasets(cfg.DATASETS.TEST)
