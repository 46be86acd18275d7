"""Training checkpoints and weight loading with clear errors.

A checkpoint (written all-or-nothing with ``nd_det.utils.atomic_file.atomic_torch_save``) holds
the student, the trainable parts of the loss terms (ReviewKD fusion, ND projection), the
optimizer, the grad scaler, the epoch count and the config; never the teacher.
"""
import hashlib
import os
from typing import Dict

import torch
from torch import nn

from ..utils.text import short_list

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_model_weights", "file_sha256",
           "extract_state_dict"]

CHECKPOINT_FORMAT = "nd_det.classification.checkpoint"


def load_checkpoint(path: str) -> Dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - one message for every unreadable file
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of nd_det.classification "
                         f"(no 'format': '{CHECKPOINT_FORMAT}' entry)")
    return payload


def extract_state_dict(payload, path: str) -> Dict[str, torch.Tensor]:
    """The model weights in ``payload``: our checkpoints and final-weights files (key 'model'),
    common wrappers ('state_dict', 'model_state_dict') or a raw state dict (torchvision files);
    a 'module.' prefix (DataParallel) is stripped."""
    if isinstance(payload, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in payload.values()):
        raise ValueError(f"{path} holds no model state dict (expected a dict of tensors, or one "
                         "under 'model' / 'state_dict')")
    if payload and all(k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return payload


def load_model_weights(model: nn.Module, path: str, what: str = "model") -> None:
    """Load weights into ``model`` strictly; errors name the file and the mismatching keys."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weights file {path!r} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read {what} weights {path}: {type(e).__name__}: {e}") from None
    state = extract_state_dict(payload, path)
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
                for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing:
        problems.append(f"missing keys {short_list(missing, 5)}")
    if unexpected:
        problems.append(f"unexpected keys {short_list(unexpected, 5)}")
    if reshaped:
        problems.append(f"shape mismatch {short_list(reshaped, 3)}")
    if not problems:
        model.load_state_dict(state, strict=True)
    else:
        raise ValueError(f"{what} weights {path} do not match the {type(model).__name__} "
                         f"architecture: {'; '.join(problems)}. Is the model name right?")


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
