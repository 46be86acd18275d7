"""Weights and checkpoint files, whatever model they hold (torch and stdlib only: the
classification package uses this too): whether a file is complete, and the one wording of what
keeps a state dict from fitting a model.

detectron2's checkpointer only logs mismatches as warnings and loads what matches; torch's
``load_state_dict(strict=True)`` raises a multi-line error.  nd-det refuses a mismatch with one
line naming the keys, hence this text."""

import pickle
import zipfile
from collections.abc import Iterable, Sequence
from typing import Callable, Optional

import torch

from ..errors import FileError
from .safe_pickle import load_pickle
from .text import first_line, short_list

__all__ = ["file_problem", "mismatch_text", "state_mismatch"]

# how torch.save's old (pre-1.6, non-zip) format starts: the pickled magic number
_LEGACY_TORCH_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


def file_problem(path: str) -> Optional[str]:
    """None if ``path`` reads as a complete checkpoint, else what is wrong with it.  A ``.pkl``
    (detectron2 model zoo) is read whole, as data (a file that asks to run code is a
    FileError); a torch (zip) file is checked entry by entry against its CRCs without unpickling
    (a cut-off file has no central directory); an old-style torch file by its header."""
    try:
        if path.endswith(".pkl"):
            load_pickle(path)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            return None if damaged is None else f"damaged (entry {damaged} fails its CRC)"
        else:
            with open(path, "rb") as f:
                legacy = f.read(len(_LEGACY_TORCH_HEADER)) == _LEGACY_TORCH_HEADER
            return None if legacy else "truncated or not a checkpoint (no zip directory)"
    except FileError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many exception types
        return f"truncated or not a checkpoint ({first_line(e)})"
    return None


def mismatch_text(
    missing: Sequence[str],
    unexpected: Sequence[str],
    wrong_shapes: Iterable[tuple[str, tuple, tuple]],
    unexpected_label: str = "unexpected keys",
) -> str:
    """``"missing keys: a, b; unexpected keys: c; shape mismatches: k (a) in the file vs (b) in
    the model"`` (the parts that apply; long lists shortened with their count); ``""`` when
    everything matched.  ``wrong_shapes``: ``(key, shape in the file, shape in the model)``."""
    shapes = [f"{k} {tuple(a)} in the file vs {tuple(b)} in the model" for k, a, b in wrong_shapes]
    parts = (("missing keys", missing, 6), (unexpected_label, unexpected, 6))
    parts += (("shape mismatches", shapes, 3),)
    return "; ".join(f"{label}: {short_list(keys, n)}" for label, keys, n in parts if keys)


def state_mismatch(
    model_shapes: dict[str, tuple],
    state: dict,
    optional: Callable[[str], bool] = lambda key: False,
    unexpected_label: str = "unexpected keys",
) -> str:
    """:func:`mismatch_text` of a file's ``state`` against a model's ``{key: shape}`` (e.g. of a
    model built on the meta device, or ``module.state_dict()``); keys for which ``optional``
    is true may be missing from either side."""
    missing = [k for k in model_shapes if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in model_shapes and not optional(k)]
    shapes = [
        (k, tuple(state[k].shape), tuple(model_shapes[k]))
        for k in model_shapes
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(model_shapes[k])
    ]
    return mismatch_text(missing, unexpected, shapes, unexpected_label)
