"""Training checkpoints and weight loading with clear errors.

A checkpoint (written all-or-nothing with ``nd_det.utils.atomic_file.atomic_torch_save``) holds
the student, the trainable parts of the loss terms (ReviewKD fusion, ND projection), the
optimizer, the grad scaler, the epoch count and the config; never the teacher.
"""
import hashlib
import os
import pickle
import zipfile
from typing import Dict, List, Optional

import torch
from torch import nn

from ..utils.text import short_list
from .errors import BadFileError, MissingFileError

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_model_weights", "check_weights_file",
           "file_sha256", "extract_state_dict", "torch_file_problem", "state_dict_problems"]

CHECKPOINT_FORMAT = "nd_det.classification.checkpoint"


# how torch.save's old (pre-1.6, non-zip) format starts: the pickled magic number
_LEGACY_TORCH_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


def torch_file_problem(path: str) -> Optional[str]:
    """None if ``path`` looks like a complete torch file, else what is wrong with it; read
    without unpickling: a zip-format file is checked entry by entry against its CRCs (a cut-off
    file has no central directory), an old-style file by its header."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                damaged = archive.testzip()
        except zipfile.BadZipFile as e:
            return f"a damaged zip archive ({e})"
        if damaged is not None:
            return f"damaged: entry {damaged} fails its CRC"
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "a zip archive without the data.pkl entry of a torch file"
        return None
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_HEADER))
    if head == _LEGACY_TORCH_HEADER:
        return None
    return "truncated, or not a torch file (no zip directory and no old-style torch header)"


def _read(path: str, what: str, key: str = ""):
    """``torch.load`` of a file the user pointed at (``key``: the config key or flag that named
    it), once it passed :func:`torch_file_problem`."""
    problem = torch_file_problem(path)
    if problem:
        where = f"{key}: " if key else ""
        raise BadFileError(f"{where}cannot read {what} {path}: {problem}; give a complete file "
                           "written by torch.save")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str) -> Dict:
    if not os.path.isfile(path):
        raise MissingFileError(f"--resume: checkpoint {path} not found; give the "
                               "last_checkpoint.pth of the run to continue")
    payload = _read(path, "checkpoint", "--resume")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BadFileError(f"{path} is not a training checkpoint of nd_det.classification "
                           f"(no 'format': '{CHECKPOINT_FORMAT}' entry); --resume needs the "
                           "last_checkpoint.pth of a run")
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
        raise BadFileError(f"{path} holds no model state dict (expected a dict of tensors, or one "
                           "under 'model' / 'state_dict')")
    if payload and all(k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return payload


def state_dict_problems(module: nn.Module, state: Dict) -> List[str]:
    """What keeps ``state`` from loading strictly into ``module``: missing and unexpected keys,
    shape mismatches (empty when it fits)."""
    own = module.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)} in the model"
                for k, v in own.items() if k in state and hasattr(state[k], "shape")
                and state[k].shape != v.shape]
    if missing:
        problems.append(f"missing keys {short_list(missing, 5)}")
    if unexpected:
        problems.append(f"unexpected keys {short_list(unexpected, 5)}")
    if reshaped:
        problems.append(f"shape mismatch {short_list(reshaped, 3)}")
    return problems


def check_weights_file(path: str, what: str = "model", key: str = "") -> None:
    """MissingFileError naming ``key`` (the config key or flag) unless ``path`` is a file."""
    if not path or not os.path.isfile(path):
        where = f"{key}: " if key else ""
        raise MissingFileError(f"{where}{what} weights file {path!r} not found; point it at an "
                               "existing file (a tools/train_cls.py model_final.pth or a raw "
                               "state dict)")


def load_model_weights(model: nn.Module, path: str, what: str = "model", key: str = "") -> None:
    """Load weights into ``model`` strictly; errors name ``key`` (the config key or flag), the
    file and the mismatching keys."""
    check_weights_file(path, what, key)
    payload = _read(path, f"{what} weights", key)
    state = extract_state_dict(payload, path)
    problems = state_dict_problems(model, state)
    if problems:
        where = f"{key}: " if key else ""
        raise BadFileError(f"{where}{what} weights {path} do not match the {type(model).__name__} "
                           f"architecture: {'; '.join(problems)}. Is the model name right?")
    model.load_state_dict(state, strict=True)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
