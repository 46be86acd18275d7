"""The models a benchmark run times: the configured student alone, and one DistillRCNN per loss
set, all with the SAME random student weights and the SAME random teacher.

No downloaded weights are needed: the teacher (its real config, e.g. the model-zoo R101-FPN) and
the student are built with random weights whose FrozenBatchNorm statistics are set from the
benchmark batch (see :mod:`nd_det.benchmark.synthetic`); the teacher is saved to a file in a
work folder and loaded by DistillRCNN exactly as a real teacher checkpoint would be, and a
made-up class-means table of the right shape goes next to it.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from nd_det.config import load_config, merge_config
from nd_det.errors import ConfigError
from nd_det.losses import ClassMeans, save_class_means
from nd_det.modeling import (FrozenTeacher, available_distill_terms, is_distill_module_key,
                        plain_student_cfg, teacher_identity)
from .synthetic import calibrate_frozen_batchnorm, random_class_means_table

__all__ = [
    "parse_loss_set",
    "build_benchmark_cfg",
    "BenchmarkFiles",
    "prepare_weight_files",
    "build_student",
    "build_distiller",
    "parameter_bytes",
    "loss_sets_by_name",
]

TEACHER_FILE = "teacher_random.pth"
STUDENT_FILE = "student_random.pth"
CLASS_MEANS_FILE = "class_means_random.pth"


def parse_loss_set(text: str) -> List[str]:
    """``"kd+nd"`` -> ``["kd", "nd"]``, checked against the loss names nd-det knows."""
    names = [n.strip() for n in text.split("+")]
    known = available_distill_terms()
    bad = [n for n in names if n not in known]
    if not text or bad:
        raise ConfigError(
            f"--losses {text!r}: unknown loss name(s) {bad or [text]}; give sets of "
            f"{known} joined by '+', e.g. nd kd+nd dkd+nd reviewkd+nd"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--losses {text!r} names a loss twice")
    return names


def build_benchmark_cfg(config_file: str, overrides: Sequence[str], device: str,
                        precision: str) -> CfgNode:
    """The distillation config: the file, the KEY VALUE overrides, the device, random student
    weights, the teacher autocast matching ``precision`` and a zero learning rate, unless an
    override sets those two.

    Why a zero learning rate: the optimizer still does all of its work (weight decay, momentum,
    the update itself, which adds zero), so a step costs what a training step costs, but every
    measured step runs on the same weights; random models trained on one repeated batch at the
    config's learning rate diverge to NaN after some steps."""
    try:
        cfg = load_config(config_file, freeze=False)
        keys = list(overrides)[0::2]
        if "MODEL.DISTILL.TEACHER_AUTOCAST" not in keys:
            cfg.MODEL.DISTILL.TEACHER_AUTOCAST = "bfloat16" if precision == "bf16" else ""
        if "SOLVER.BASE_LR" not in keys:
            cfg.SOLVER.BASE_LR = 0.0
        merge_config(cfg, overrides, "config overrides")
    except ConfigError as e:
        raise ConfigError(str(e)) from None
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""  # random student weights (set by prepare_weight_files)
    if cfg.MODEL.META_ARCHITECTURE != "DistillRCNN":
        raise ConfigError(
            f"{config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}; the "
            "benchmark needs a DistillRCNN config (configs/COCO-Distill/*.yaml)"
        )
    return cfg


@dataclass
class BenchmarkFiles:
    """Where the random weights of one run live (all in one work folder)."""

    teacher_weights: str
    student_weights: str
    class_means: str


def prepare_weight_files(cfg: CfgNode, work_dir: str, batch: List[Dict],
                         seed: int = 0) -> BenchmarkFiles:
    """Build the random student and teacher, calibrate their FrozenBatchNorm layers on
    ``batch`` as each model preprocesses it, and write teacher, student and class-means files
    into ``work_dir``.  ``cfg`` is updated in place to point at the teacher weights and the
    class means."""
    os.makedirs(work_dir, exist_ok=True)
    files = BenchmarkFiles(
        teacher_weights=os.path.join(work_dir, TEACHER_FILE),
        student_weights=os.path.join(work_dir, STUDENT_FILE),
        class_means=os.path.join(work_dir, CLASS_MEANS_FILE),
    )
    torch.manual_seed(seed)
    frozen = FrozenTeacher(cfg, load_weights=False)  # random weights, saved as the teacher file
    teacher = frozen.model
    calibrate_frozen_batchnorm(teacher, lambda: _backbone_on(teacher, batch))
    DetectionCheckpointer(teacher, save_dir=work_dir).save(os.path.splitext(TEACHER_FILE)[0])
    num_rows = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    dim = frozen.embedding_dim
    del teacher, frozen

    torch.manual_seed(seed + 1)
    student = build_model(plain_student_cfg(cfg)).eval()
    calibrate_frozen_batchnorm(student, lambda: _backbone_on(student, batch))
    torch.save(student.state_dict(), files.student_weights)
    del student

    cfg.defrost()
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = files.teacher_weights
    cfg.MODEL.DISTILL.CLASS_MEANS = files.class_means
    cfg.freeze()
    means, counts = random_class_means_table(num_rows, dim, seed=seed)
    save_class_means(files.class_means, ClassMeans(means, counts, teacher_identity(cfg)))
    return files


def _backbone_on(model: torch.nn.Module, batch: List[Dict]):
    return model.backbone(model.preprocess_image(batch).tensor)


def _with_student_weights(model: torch.nn.Module, files: BenchmarkFiles) -> torch.nn.Module:
    """``model`` in training mode, with the shared random student weights."""
    path = files.student_weights
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not is_distill_module_key(k)]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{path} does not fit the student (missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}); it was written for another config"
        )
    return model.train()


def build_student(cfg: CfgNode, files: BenchmarkFiles) -> torch.nn.Module:
    """The plain GeneralizedRCNN student (what training without distillation runs)."""
    return _with_student_weights(build_model(plain_student_cfg(cfg)), files)


def build_distiller(cfg: CfgNode, losses: Sequence[str], files: BenchmarkFiles) -> torch.nn.Module:
    """DistillRCNN with ``MODEL.DISTILL.LOSSES = losses``, the random teacher loaded from its
    file and the shared student weights."""
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.MODEL.DISTILL.LOSSES = list(losses)
    run_cfg.freeze()
    torch.manual_seed(0)  # the same ABF initialisation in every process
    return _with_student_weights(build_model(run_cfg), files)


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def loss_sets_by_name(texts: Sequence[str]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for text in texts:
        names = parse_loss_set(text)
        out["+".join(names)] = names
    return out
