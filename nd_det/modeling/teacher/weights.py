"""The teacher's weights file: which one (TEACHER_WEIGHTS, or the model-zoo weights of a
model-zoo TEACHER_CONFIG, yacs or LazyConfig alike), the keys a teacher file may carry beyond the
model, the messages for a file that does not fit, and the identity that ties a class-means table
to the teacher."""

import os

from detectron2.config import CfgNode

from ...errors import ConfigError
from ..student_checkpoint import DISTILL_STATE_PREFIX

__all__ = [
    "resolve_teacher_weights",
    "teacher_identity",
    "allowed_unexpected",
    "unreadable_weights",
    "weights_mismatch_message",
]


def allowed_unexpected(key: str) -> bool:
    """Keys a teacher file may carry that the built model does not have: old buffers and the
    training-only modules of an nd-det student checkpoint (a distilled model used as teacher)."""
    return (
        key.startswith(DISTILL_STATE_PREFIX)
        or key.endswith(("num_batches_tracked", "pixel_mean", "pixel_std"))
        or "anchor_generator.cell_anchors" in key
    )


def unreadable_weights(weights: str, why: str) -> ConfigError:
    return ConfigError(
        f"cannot load teacher weights MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: {why}. Check "
        "that the file is a complete detectron2 checkpoint."
    )


def weights_mismatch_message(weights: str, problems: str) -> str:
    return (
        f"teacher weights {weights!r} do not match the teacher built from "
        f"MODEL.DISTILL.TEACHER_CONFIG ({problems}). Use the checkpoint of that exact "
        "architecture, or fix TEACHER_CONFIG / TEACHER_OPTS to describe it."
    )


def resolve_teacher_weights(cfg: CfgNode) -> str:
    """TEACHER_WEIGHTS, or the model-zoo URL of TEACHER_CONFIG when that is empty; a local path
    must exist and be readable."""
    weights = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    name = cfg.MODEL.DISTILL.TEACHER_CONFIG
    if not weights and not os.path.isfile(name):
        from detectron2 import model_zoo

        try:
            weights = model_zoo.get_checkpoint_url(name)  # a .yaml or a .py name
        except RuntimeError:
            weights = ""
    if not weights:
        raise ConfigError(
            "MODEL.DISTILL.TEACHER_WEIGHTS is empty and TEACHER_CONFIG "
            f"({name!r}) is not a model-zoo config with known weights: set TEACHER_WEIGHTS to the "
            "teacher's checkpoint (a path or a detectron2:// URL)."
        )
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: file not found. Point it at the "
                "teacher checkpoint (.pkl from the detectron2 model zoo or a .pth written by "
                "detectron2), or use a detectron2:// URL."
            )
        if not os.access(weights, os.R_OK):
            raise ConfigError(f"MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: file is not readable.")
    return weights


def teacher_identity(cfg: CfgNode) -> dict:
    """The metadata that ties a class-means file to the teacher of ``cfg`` (FrozenTeacher adds
    the box stage of a Cascade teacher)."""
    try:
        weights = resolve_teacher_weights(cfg)
    except ConfigError:
        weights = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    return {
        "teacher_config": cfg.MODEL.DISTILL.TEACHER_CONFIG,
        "teacher_weights": weights,
        "teacher_opts": [str(x) for x in cfg.MODEL.DISTILL.TEACHER_OPTS],
    }
