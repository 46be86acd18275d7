"""Build the frozen teacher detector from its own config file and weights.

The teacher is an ordinary detectron2 GeneralizedRCNN.  Its weights are loaded strictly: a
missing key, an unexpected key (beyond a small allowed set) or a shape mismatch stops the run,
because a silently half-loaded teacher distils noise for days before anyone notices.
"""
import logging
import os
from typing import List, Optional, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from torch import nn

__all__ = [
    "TeacherError",
    "resolve_teacher_config_file",
    "resolve_teacher_weights",
    "build_teacher_cfg",
    "load_teacher_weights",
    "build_teacher",
    "check_teacher_weights_exist",
    "freeze",
    "teacher_identity",
]

logger = logging.getLogger(__name__)

# Checkpoint keys a teacher file may carry that the built model does not have: old buffers and
# the training-only modules of an nd-det student checkpoint (a distilled model used as teacher).
_ALLOWED_UNEXPECTED_PREFIXES = ("distill_losses.",)
_ALLOWED_UNEXPECTED_SUFFIXES = ("num_batches_tracked", "pixel_mean", "pixel_std")


class TeacherError(RuntimeError):
    """The teacher cannot be built or loaded; the message names the key/file and the fix."""


def resolve_teacher_config_file(name: str) -> str:
    """A path for TEACHER_CONFIG: an existing file, or a detectron2 model-zoo config name."""
    if not name:
        raise TeacherError(
            "MODEL.DISTILL.TEACHER_CONFIG is empty: set it to a detectron2 model-zoo name such as "
            "'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml' or to a yaml file."
        )
    if os.path.isfile(name):
        return name
    from detectron2 import model_zoo

    try:
        return model_zoo.get_config_file(name)
    except RuntimeError:
        raise TeacherError(
            f"MODEL.DISTILL.TEACHER_CONFIG={name!r} is neither an existing file nor a detectron2 "
            "model-zoo config name (e.g. 'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml')."
        ) from None


def resolve_teacher_weights(cfg: CfgNode) -> str:
    """TEACHER_WEIGHTS, or the model-zoo URL of TEACHER_CONFIG when that is empty."""
    weights = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    if weights:
        return weights
    name = cfg.MODEL.DISTILL.TEACHER_CONFIG
    if not os.path.isfile(name):
        from detectron2 import model_zoo

        try:
            return model_zoo.get_checkpoint_url(name)
        except RuntimeError:
            pass
    raise TeacherError(
        "MODEL.DISTILL.TEACHER_WEIGHTS is empty and TEACHER_CONFIG "
        f"({name!r}) is not a model-zoo config with known weights: set TEACHER_WEIGHTS to the "
        "teacher's checkpoint (a path or a detectron2:// URL)."
    )


def is_local_path(path: str) -> bool:
    return "://" not in path


def check_teacher_weights_exist(cfg: CfgNode) -> str:
    """Resolve the teacher weights and, for a local path, check it exists and is readable."""
    weights = resolve_teacher_weights(cfg)
    if is_local_path(weights):
        if not os.path.isfile(weights):
            raise TeacherError(
                f"MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: file not found. Point it at the "
                "teacher checkpoint (.pkl from the detectron2 model zoo or a .pth written by "
                "detectron2), or use a detectron2:// URL."
            )
        if not os.access(weights, os.R_OK):
            raise TeacherError(f"MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: file is not readable.")
    return weights


def build_teacher_cfg(cfg: CfgNode) -> CfgNode:
    """The teacher's own config: its yaml file + TEACHER_OPTS, on the student's device."""
    from ..config import add_distill_config  # late: nd_det.config imports this package

    teacher_cfg = get_cfg()
    add_distill_config(teacher_cfg)  # the teacher file may use nd-det backbones' keys
    teacher_cfg.set_new_allowed(True)
    path = resolve_teacher_config_file(cfg.MODEL.DISTILL.TEACHER_CONFIG)
    teacher_cfg.merge_from_file(path)
    opts = list(cfg.MODEL.DISTILL.TEACHER_OPTS)
    if len(opts) % 2:
        raise TeacherError(
            f"MODEL.DISTILL.TEACHER_OPTS must hold KEY VALUE pairs; got an odd list {opts}"
        )
    teacher_cfg.merge_from_list(opts)
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    teacher_cfg.MODEL.WEIGHTS = ""
    # the teacher is always a plain detector, never a distiller itself
    if teacher_cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
        teacher_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    teacher_cfg.freeze()
    return teacher_cfg


class _StrictCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps the incompatible keys of its last load, for
    :func:`load_teacher_weights` to refuse."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self.incompatible = incompatible
        return incompatible


def _disallowed_unexpected(keys: List[str]) -> List[str]:
    return [
        k
        for k in keys
        if not k.startswith(_ALLOWED_UNEXPECTED_PREFIXES)
        and not k.endswith(_ALLOWED_UNEXPECTED_SUFFIXES)
        and "anchor_generator.cell_anchors" not in k
    ]


def _short(keys, limit=8) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_teacher_weights(model: nn.Module, weights: str) -> None:
    """Load ``weights`` into ``model`` and fail loudly unless every key matched."""
    checkpointer = _StrictCheckpointer(model)
    try:
        checkpointer.load(weights)
    except TeacherError:
        raise
    except Exception as e:  # noqa: BLE001 - unreadable/corrupt files surface in many types
        raise TeacherError(
            f"cannot load teacher weights MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: "
            f"{type(e).__name__}: {e}. Check that the file is a complete detectron2 checkpoint."
        ) from None
    incompatible = getattr(checkpointer, "incompatible", None)
    if incompatible is None:
        raise TeacherError(f"teacher weights {weights!r} held no model state")
    problems = []
    if incompatible.missing_keys:
        problems.append(f"missing keys: {_short(incompatible.missing_keys)}")
    unexpected = _disallowed_unexpected(incompatible.unexpected_keys)
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if incompatible.incorrect_shapes:
        shapes = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in incompatible.incorrect_shapes]
        problems.append(f"shape mismatches: {_short(shapes, 4)}")
    if problems:
        raise TeacherError(
            f"teacher weights {weights!r} do not match the teacher built from "
            "MODEL.DISTILL.TEACHER_CONFIG (" + "; ".join(problems) + "). Use the checkpoint of "
            "that exact architecture, or fix TEACHER_CONFIG / TEACHER_OPTS to describe it."
        )


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_teacher(cfg: CfgNode, load_weights: bool = True) -> Tuple[nn.Module, CfgNode]:
    """Build, load and freeze the teacher described by ``cfg.MODEL.DISTILL``."""
    teacher_cfg = build_teacher_cfg(cfg)
    weights: Optional[str] = check_teacher_weights_exist(cfg) if load_weights else None
    model = build_model(teacher_cfg)
    if weights is not None:
        load_teacher_weights(model, weights)
        logger.info("Loaded teacher weights from %s", weights)
    return freeze(model), teacher_cfg


def teacher_identity(cfg: CfgNode) -> dict:
    """The metadata that ties a class-means file to its teacher."""
    try:
        weights = resolve_teacher_weights(cfg)
    except TeacherError:
        weights = ""
    return {
        "teacher_config": cfg.MODEL.DISTILL.TEACHER_CONFIG,
        "teacher_weights": weights,
        "teacher_opts": [str(x) for x in cfg.MODEL.DISTILL.TEACHER_OPTS],
    }

