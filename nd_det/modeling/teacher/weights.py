"""The teacher's weights file: which one (TEACHER_WEIGHTS, or the model-zoo weights of a
model-zoo TEACHER_CONFIG, yacs or LazyConfig alike), the keys a teacher file may carry beyond the
model, the message for a file that does not fit, and the identity that ties a class-means table
(and a student's checkpoints) to the teacher."""

import contextlib
import os

from detectron2.config import CfgNode

from ...errors import ConfigError
from ..student_checkpoint import DISTILL_STATE_PREFIX
from .spec import TeacherSpec, as_teacher_spec

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
        f"MODEL.DISTILL.TEACHER_WEIGHTS {weights}: not a detectron2 checkpoint ({why})"
    )


def weights_mismatch_message(weights: str, problems: str) -> str:
    return (
        f"MODEL.DISTILL.TEACHER_WEIGHTS {weights} does not fit the teacher of TEACHER_CONFIG "
        f"({problems}); give that architecture's checkpoint or fix TEACHER_CONFIG / TEACHER_OPTS"
    )


def resolve_teacher_weights(cfg: "CfgNode | TeacherSpec") -> str:
    """TEACHER_WEIGHTS, or the model-zoo URL of TEACHER_CONFIG when that is empty."""
    spec = as_teacher_spec(cfg)
    weights, name = spec.weights, spec.config
    if not weights and not os.path.isfile(name):
        from detectron2 import model_zoo

        with contextlib.suppress(RuntimeError):  # not a model-zoo name: no weights known
            weights = model_zoo.get_checkpoint_url(name)  # a .yaml or a .py name
    if not weights:
        raise ConfigError("MODEL.DISTILL.TEACHER_WEIGHTS is empty: set the teacher's checkpoint")
    return weights


def teacher_identity(cfg: "CfgNode | TeacherSpec") -> dict:
    """The metadata that ties a class-means file, and a student's checkpoints, to the teacher
    of ``cfg`` (FrozenTeacher adds the box stage of a Cascade teacher)."""
    spec = as_teacher_spec(cfg)
    try:
        weights = resolve_teacher_weights(spec)
    except ConfigError:
        weights = spec.weights
    return {
        "teacher_config": spec.config,
        "teacher_weights": weights,
        "teacher_opts": [str(x) for x in spec.opts],
    }
