"""What a detection run checks in the parent process, before any worker starts and before
anything is written to OUTPUT_DIR (docs/reliability.md).

The model is built once, on PyTorch's meta device (:func:`~nd_det.modeling.shapes.build_on_meta`:
no weights, no memory): detectron2's builders run their own checks, a DistillRCNN builds its
teacher (its config read once, checked by :class:`~nd_det.modeling.FrozenTeacher`) and its
distillation terms (their checks, the class-means table read).  What detectron2, yacs or torch
refuse there is one line (``nd_det.errors.input_stage``, around the whole pre-flight).  Besides
that, only what nobody checks before work is lost: the launch against the machine, the solver
keys detectron2 trips over inside a worker (after OUTPUT_DIR is written), the datasets and every
image (:mod:`nd_det.data.image_scan`), OUTPUT_DIR, and the weights files (a URL is downloaded
now, once).
"""

import math

import torch
from detectron2.config import CfgNode

from ..config import DISTILL_META_ARCHITECTURES
from ..data.image_scan import scan_registered_datasets
from ..errors import ConfigError, UserError
from ..modeling.bn_groups import bn_group_size
from ..modeling.shapes import build_on_meta
from ..modeling.student_checkpoint import load_student_checkpoint, plain_student_cfg
from ..modeling.teacher import FrozenTeacher
from ..modeling.weights import local_weights_file
from ..utils.paths import check_writable
from ..utils.seed import MAX_SEED
from .checkpoint import resume_checkpoint
from .evaluators import evaluator_kind
from .setup import check_datasets
from .trainer import amp_precision

__all__ = ["preflight_distill", "check_run_keys", "check_train_run", "check_eval_run"]

_INPUT_FORMATS = ("BGR", "RGB", "L", "YUV-BT.601")


def _run_bounds(world: int) -> tuple:
    """(key, whether its value is valid, what to give) for the keys detectron2 only trips over
    inside a worker, after OUTPUT_DIR is written, or never (a run that silently does nothing)."""
    top_seed = MAX_SEED - world + 1  # each process seeds numpy with SEED + its rank
    return (
        ("SOLVER.MAX_ITER", lambda v: v >= 1, "1 or more"),
        ("SOLVER.CHECKPOINT_PERIOD", lambda v: v >= 1, "1 or more"),
        ("TEST.EVAL_PERIOD", lambda v: v >= 0, "0 (at the end) or more"),
        ("DATALOADER.NUM_WORKERS", lambda v: v >= 0, "0 or more"),
        (
            "SOLVER.IMS_PER_BATCH",
            lambda v: v >= world and v % world == 0,
            f"a multiple of the {world} processes",
        ),
        ("SOLVER.BASE_LR", lambda v: math.isfinite(v) and v > 0, "a positive learning rate"),
        ("SEED", lambda v: -1 <= v <= top_seed, f"0 .. {top_seed}, or -1 (random)"),
    )


def _get(cfg: CfgNode, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def check_run_keys(cfg: CfgNode, args, train: bool = True) -> None:
    """The launch against the machine and MODEL.DEVICE; the input format; with ``train`` the
    solver keys no builder checks before a worker writes into OUTPUT_DIR."""
    world = int(args.num_gpus) * int(args.num_machines)
    if world < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise UserError(
            f"--num-gpus {args.num_gpus} --num-machines {args.num_machines} --machine-rank "
            f"{args.machine_rank}: give 1 or more of each and a rank below --num-machines"
        )
    device = torch.device(cfg.MODEL.DEVICE)  # an unknown name: torch's one-line error
    if device.type == "cuda" and torch.cuda.device_count() < args.num_gpus:
        raise ConfigError(
            f"MODEL.DEVICE {device}: torch sees {torch.cuda.device_count()} CUDA device(s) for "
            f"--num-gpus {args.num_gpus}; add MODEL.DEVICE cpu to the command, or fewer processes"
        )
    if cfg.INPUT.FORMAT not in _INPUT_FORMATS or min(cfg.MODEL.PIXEL_STD) <= 0:
        raise ConfigError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} / MODEL.PIXEL_STD "
            f"{list(cfg.MODEL.PIXEL_STD)}: use {_INPUT_FORMATS}, std values > 0"
        )
    if not train:
        return
    for key, valid, need in _run_bounds(world):
        if not valid(_get(cfg, key)):
            raise ConfigError(f"{key} {_get(cfg, key)}: give {need}")
    solver = cfg.SOLVER
    if solver.AMP.ENABLED and device.type != "cuda":
        raise ConfigError("SOLVER.AMP.ENABLED True needs MODEL.DEVICE cuda; set it False here")
    amp_precision(solver.AMP.PRECISION)


def preflight_distill(cfg: CfgNode):
    """The whole model of ``cfg`` on the meta device, once (student, and for a distillation
    config the teacher and the terms, the class-means table read); returns it."""
    if cfg.MODEL.DISTILL.LOSSES and cfg.MODEL.META_ARCHITECTURE not in DISTILL_META_ARCHITECTURES:
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} trains no distillation "
            "(MODEL.DISTILL.LOSSES is set): set DistillRCNN (DistillRetinaNet for a RetinaNet), "
            "or MODEL.DISTILL.LOSSES '[]'"
        )
    return build_on_meta(cfg)


def check_train_run(cfg: CfgNode, args, build=preflight_distill) -> None:
    """tools/train_net.py without --eval-only (``build(cfg)``: the run's model on the meta
    device; a LazyConfig run's is built from its own file)."""
    check_run_keys(cfg, args)
    check_datasets(cfg)
    check_writable(cfg.OUTPUT_DIR, "OUTPUT_DIR", folder=True)
    teacher = getattr(build(cfg), "teacher", None)
    if teacher is not None and cfg.MODEL.DISTILL.REVIEWKD.NORM == "bn":
        bn_group_size(
            cfg.MODEL.DISTILL.REVIEWKD.BN_IMAGES,
            cfg.SOLVER.IMS_PER_BATCH,
            args.num_gpus * args.num_machines,
        )
    for name in cfg.DATASETS.TEST:
        evaluator_kind(name)
    scan_registered_datasets([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])
    if args.resume:
        resume_checkpoint(cfg.OUTPUT_DIR)  # names the file it will use, or stops
    elif cfg.MODEL.WEIGHTS:
        local_weights_file("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS)
    if teacher is not None:  # downloaded now if a URL: a network failure is one line
        teacher.load_weights()  # on the meta device: names and shapes


def _student_on_meta(cfg: CfgNode):
    return build_on_meta(plain_student_cfg(cfg), "the student")


def check_eval_run(cfg: CfgNode, args, build_student=_student_on_meta, teacher=None) -> None:
    """tools/train_net.py --eval-only [--eval-teacher] (``build_student(cfg)``: the student on
    the meta device, ``teacher``: its TeacherSpec; a LazyConfig run's come from its file)."""
    check_run_keys(cfg, args, train=False)
    check_datasets(cfg, splits=("TEST",), required=("TEST",))
    check_writable(cfg.OUTPUT_DIR, "OUTPUT_DIR", folder=True)
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("--eval-only needs MODEL.WEIGHTS (the student checkpoint to evaluate)")
    # on the meta device: names and shapes, the student entries of any checkpoint
    load_student_checkpoint(build_student(cfg), cfg.MODEL.WEIGHTS)
    if args.eval_teacher:
        with torch.device("meta"):
            FrozenTeacher(teacher or cfg)
    for name in cfg.DATASETS.TEST:
        evaluator_kind(name)
    scan_registered_datasets(cfg.DATASETS.TEST)
