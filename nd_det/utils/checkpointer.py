"""fvcore's Checkpointer with crash-safe saves (torch + fvcore: the classification trainer uses it
as it is, detection's checkpointer adds detectron2's file formats on top):

* a checkpoint file, and the ``last_checkpoint`` tag, appear under their final name only when
  complete (:mod:`nd_det.utils.atomic_file`), so a run killed at any moment leaves either the
  previous or the new checkpoint, never half of one;
* a write the system refuses half-way (a full disk, a quota) removes its temporary file and
  raises one FileError saying that the previous checkpoint and ``last_checkpoint`` are kept;
* a model holding a NaN/inf weight is never saved: the save raises instead;
* ``save`` is called on every rank (the checkpointables' states are taken on each: an RNG state
  gathers every rank's generators) and writes where ``save_to_disk`` is true (rank 0).
"""

import os

import torch
from fvcore.common.checkpoint import Checkpointer

from ..errors import FileError, NonFiniteError
from .atomic_file import atomic_torch_save, atomic_write_text
from .paths import write_failed

__all__ = ["AtomicCheckpointer"]


class AtomicCheckpointer(Checkpointer):
    """fvcore's Checkpointer with the guarantees of the module docstring."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir:
            return
        data = {"model": self.model.state_dict()}
        bad = [
            k
            for k, v in data["model"].items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise NonFiniteError(
                f"not saving checkpoint {name}: NaN/inf in {len(bad)} weight tensor(s), e.g. "
                f"{', '.join(bad[:5])}. The last good checkpoint in {self.save_dir} is kept; "
                "lower the learning rate or the distillation loss weights and resume from it."
            )
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()  # on every rank (see the module docstring)
        if not self.save_to_disk:
            return
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        try:
            atomic_torch_save(data, path)  # makes save_dir when missing
            self.tag_last_checkpoint(basename)
        except OSError as e:
            raise self._not_written(path, e) from None

    def _not_written(self, path: str, error: OSError) -> FileError:
        tag = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(tag, encoding="utf-8") as f:
                kept = f"{tag} still names {f.read().strip()}, which is intact"
        except (OSError, UnicodeDecodeError):
            kept = "no earlier checkpoint of this run exists"
        return write_failed(
            "checkpoint",
            path,
            error,
            f"nothing was replaced ({kept}): free space or fix "
            f"{self.save_dir}, then continue with --resume",
        )

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))
