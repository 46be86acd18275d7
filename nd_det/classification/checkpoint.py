"""Training checkpoints and weight loading with clear errors.

A checkpoint (written all-or-nothing with ``nd_det.utils.atomic_file.atomic_torch_save``) holds
the student, the trainable parts of the loss terms (ReviewKD fusion, ND projection), the
optimizer, the grad scaler, the epoch count and the config; never the teacher.
"""

import hashlib
import os

import torch
from torch import nn

from ..errors import FileError
from ..utils.checkpoint_files import file_problem, state_mismatch

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "load_model_weights",
    "check_weights_file",
    "file_sha256",
    "extract_state_dict",
    "module_mismatch",
]

CHECKPOINT_FORMAT = "nd_det.classification.checkpoint"


def _read(path: str, what: str, key: str = ""):
    """``torch.load`` of a file the user pointed at (``key``: the config key or flag that named
    it), once it passed :func:`~nd_det.utils.checkpoint_files.file_problem`."""
    problem = file_problem(path)
    if problem:
        where = f"{key}: " if key else ""
        raise FileError(
            f"{where}cannot read {what} {path}: {problem}; give a complete file "
            "written by torch.save"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileError(
            f"--resume: checkpoint {path} not found; give the "
            "last_checkpoint.pth of the run to continue"
        )
    payload = _read(path, "checkpoint", "--resume")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise FileError(
            f"{path} is not a training checkpoint of nd_det.classification "
            f"(no 'format': '{CHECKPOINT_FORMAT}' entry); --resume needs the "
            "last_checkpoint.pth of a run"
        )
    return payload


def extract_state_dict(payload, path: str) -> dict[str, torch.Tensor]:
    """The model weights in ``payload``: our checkpoints and final-weights files (key 'model'),
    common wrappers ('state_dict', 'model_state_dict') or a raw state dict (torchvision files);
    a 'module.' prefix (DataParallel) is stripped."""
    if isinstance(payload, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise FileError(
            f"{path} holds no model state dict (expected a dict of tensors, or one "
            "under 'model' / 'state_dict')"
        )
    if payload and all(k.startswith("module.") for k in payload):
        payload = {k[len("module.") :]: v for k, v in payload.items()}
    return payload


def check_weights_file(path: str, what: str = "model", key: str = "") -> None:
    """FileError naming ``key`` (the config key or flag) unless ``path`` is a file."""
    if not path or not os.path.isfile(path):
        where = f"{key}: " if key else ""
        raise FileError(
            f"{where}{what} weights file {path!r} not found; point it at an "
            "existing file (a tools/train_cls.py model_final.pth or a raw "
            "state dict)"
        )


def load_model_weights(model: nn.Module, path: str, what: str = "model", key: str = "") -> None:
    """Load weights into ``model`` strictly; errors name ``key`` (the config key or flag), the
    file and the mismatching keys."""
    check_weights_file(path, what, key)
    payload = _read(path, f"{what} weights", key)
    state = extract_state_dict(payload, path)
    problems = module_mismatch(model, state)
    if problems:
        where = f"{key}: " if key else ""
        raise FileError(
            f"{where}{what} weights {path} do not match the {type(model).__name__} "
            f"architecture: {problems}. Is the model name right?"
        )
    model.load_state_dict(state, strict=True)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def module_mismatch(module: nn.Module, state: dict) -> str:
    """What keeps ``state`` from loading strictly into ``module`` (``""`` when it fits)."""
    return state_mismatch(_shapes(module), state)
