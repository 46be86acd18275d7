"""Crash-safe training checkpoints.

``AtomicCheckpointer`` is detectron2's DetectionCheckpointer with two guarantees:

* a checkpoint file, and the ``last_checkpoint`` tag, appear under their final name only when
  complete (written to a temporary file in the same folder, flushed, fsynced, then renamed), so a
  run killed at any moment leaves either the previous or the new checkpoint, never half of one;
* a model holding a NaN/inf weight is never saved: the save raises instead.
"""
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..errors import UserError
from ..utils.atomic_file import atomic_torch_save, atomic_write_text

__all__ = ["AtomicCheckpointer", "NonFiniteWeightsError"]


class NonFiniteWeightsError(UserError, FloatingPointError):
    """The model has NaN/inf weights; they are not written to disk."""


def non_finite_entries(state) -> list:
    return [
        k for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with all-or-nothing files and a refusal to save NaN/inf weights."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        bad = non_finite_entries(data["model"])
        if bad:
            raise NonFiniteWeightsError(
                f"not saving checkpoint {name}: NaN/inf in {len(bad)} weight tensor(s), e.g. "
                f"{', '.join(bad[:5])}. The last good checkpoint in {self.save_dir} is kept; "
                "lower the learning rate or the distillation loss weights and resume from it."
            )
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))
