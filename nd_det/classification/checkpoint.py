"""Checkpoints and weights of classifiers: fvcore's Checkpointer, saving all or nothing
(:class:`~nd_det.utils.checkpointer.AtomicCheckpointer`), reading files as data (torch's
``weights_only=True``) and loading strictly.

A training checkpoint holds the student under ``model`` (what every weights file of this package
holds there), the trainable parts of the distillation terms (``terms``), the optimizer, the
grad scaler, every rank's RNG states, the epoch and iteration reached; never the teacher.  A raw
state dict (torchvision, timm) loads as the model's weights.
"""

import hashlib

from torch import nn

from ..errors import FileError, input_stage
from ..utils.checkpoint_files import mismatch_text
from ..utils.checkpointer import AtomicCheckpointer
from ..utils.safe_pickle import load_torch

__all__ = ["ClassifierCheckpointer", "load_weights", "file_sha256"]


class ClassifierCheckpointer(AtomicCheckpointer):
    """``what``: the config key or flag that named the file, for the one-line errors (a file
    that is missing, truncated, asks to run code, or whose weights do not fit the model)."""

    def __init__(self, model: nn.Module, save_dir: str = "", what: str = "model.weights", **kw):
        super().__init__(model, save_dir, **kw)
        self.what = what

    def load(self, path: str, checkpointables=None) -> dict:
        self.path = path
        with input_stage(f"{self.what} {path}"):
            return super().load(path, checkpointables)

    def _load_file(self, f: str) -> dict:
        loaded = load_torch(f)
        if isinstance(loaded, dict) and "model" not in loaded:  # a raw state dict
            loaded = {"model": loaded.get("state_dict", loaded)}
        return loaded

    def _log_incompatible_keys(self, incompatible) -> None:
        wrong = incompatible.incorrect_shapes  # fvcore also lists these as missing
        missing = [k for k in incompatible.missing_keys if k not in {w[0] for w in wrong}]
        problems = mismatch_text(missing, incompatible.unexpected_keys, wrong)
        if problems:
            raise FileError(
                f"{self.what} {self.path} does not fit {type(self.model).__name__} ({problems}): "
                "is the model name right?"
            )


def load_weights(model: nn.Module, path: str, what: str = "model.weights") -> dict:
    """Load the weights file ``path`` (named by the key or flag ``what``) into ``model``,
    strictly; returns the file's other entries."""
    return ClassifierCheckpointer(model, what=what).load(path)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
