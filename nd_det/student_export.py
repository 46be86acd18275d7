"""The student alone: a plain detectron2 config and a student-only state dict.

A DistillRCNN checkpoint holds the student (keys identical to a GeneralizedRCNN's) plus the
training-only modules of the distillation terms (``distill_losses.*``, e.g. ReviewKD's ABFs); it
never holds the teacher.  Deploying needs only the former.
"""
import os
from typing import Dict

import torch
from detectron2.config import CfgNode

__all__ = [
    "DISTILL_STATE_PREFIX",
    "plain_student_cfg",
    "student_state_dict",
    "uses_nd_det_backbone",
]

# state_dict prefix of the training-only distillation modules (see DistillRCNN.distill_losses)
DISTILL_STATE_PREFIX = "distill_losses."

# backbones registered by nd_det (stock detectron2 cannot build these)
_ND_DET_BACKBONES = ("build_mobilenetv2_fpn_backbone",)


def uses_nd_det_backbone(cfg: CfgNode) -> bool:
    return cfg.MODEL.BACKBONE.NAME in _ND_DET_BACKBONES


def plain_student_cfg(cfg: CfgNode) -> CfgNode:
    """``cfg`` as a plain detectron2 GeneralizedRCNN config: no ``MODEL.DISTILL`` keys (and no
    nd-det backbone keys unless the student's backbone is one of nd-det's own)."""
    plain = cfg.clone()
    plain.defrost()
    if plain.MODEL.META_ARCHITECTURE == "DistillRCNN":
        plain.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    plain.MODEL.pop("DISTILL", None)
    if not uses_nd_det_backbone(plain):
        plain.MODEL.pop("MOBILENETV2", None)
    plain.freeze()
    return plain


def student_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The student's entries of a DistillRCNN state dict (also accepts a DDP ``module.`` one)."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if not key.startswith(DISTILL_STATE_PREFIX):
            out[key] = value
    return out


def load_checkpoint_model_state(path: str) -> Dict[str, torch.Tensor]:
    """The ``model`` entry of a detectron2 training checkpoint (.pth) at ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a detectron2 checkpoint (no 'model' state dict)")
    return state
