"""Crash-safe training checkpoints.

``AtomicCheckpointer`` is detectron2's DetectionCheckpointer with these guarantees:

* every file it loads is read as data (:class:`~nd_det.modeling.weights.SafeCheckpointer`):
  a ``.pkl`` or torch file that asks to run code is refused in one line, before it is used;

* a checkpoint file, and the ``last_checkpoint`` tag, appear under their final name only when
  complete (written to a temporary file in the same folder, flushed, fsynced, then renamed), so a
  run killed at any moment leaves either the previous or the new checkpoint, never half of one;
* a write the system refuses half-way (a full disk: ENOSPC, a quota) removes its temporary file
  and raises one FileError saying that the previous checkpoint and ``last_checkpoint`` are kept
  and that ``--resume`` continues from them;
* a model holding a NaN/inf weight is never saved: the save raises instead;
* ``save`` is called on every rank (the checkpointables' states are taken on each: RNGState
  gathers every rank's generators) and writes on rank 0 only;
* a torchvision ImageNet file (``features.0.0.weight`` ...) given as MODEL.WEIGHTS loads, strictly,
  into a ``build_torchvision_fpn_backbone`` student (:mod:`nd_det.modeling.torchvision_weights`).

``resume_checkpoint`` picks what ``--resume`` continues from: the tagged checkpoint, or the newest
intact one (with a warning naming what it skipped), or nothing (iteration 0, with a warning) when
the folder holds a run that was stopped before its first checkpoint, or a clear stop when the
folder holds no run or only damaged checkpoints.
"""

import glob
import logging
import os
from typing import Optional

import torch

from ..errors import FileError, NonFiniteError
from ..modeling.torchvision_weights import TorchvisionWeightsMixin
from ..modeling.weights import SafeCheckpointer
from ..utils.atomic_file import atomic_torch_save, atomic_write_text
from ..utils.checkpoint_files import file_problem
from ..utils.paths import write_failed
from ..utils.text import first_line
from .setup import RUN_CONFIG_NAME

__all__ = [
    "AtomicCheckpointer",
    "check_checkpoint_file",
    "resume_checkpoint",
    "remove_partial_checkpoints",
]

logger = logging.getLogger(__name__)


class AtomicCheckpointer(TorchvisionWeightsMixin, SafeCheckpointer):
    """DetectionCheckpointer with the guarantees of the module docstring."""

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
                f"{', '.join(bad[:5])}; lower the learning rate or the distillation loss weights "
                f"and resume from the last good checkpoint in {self.save_dir}"
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


def check_checkpoint_file(path: str, what: str) -> None:
    """Raise FileError naming ``what`` unless ``path`` is a complete checkpoint."""
    problem = file_problem(path)
    if problem:
        raise FileError(f"{what} {path} is {problem}: give a complete checkpoint")


def resume_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint a ``--resume`` of ``output_dir`` continues from: the one ``last_checkpoint``
    names, else (that tag missing, unreadable or naming a damaged file) the newest intact
    ``model_*.pth``, with a warning naming what was skipped.  None (with a warning) when the
    folder holds the record of a run (its config.yaml) but no checkpoint: that run was stopped
    before its first checkpoint and starts again from iteration 0.  Raises FileError when the
    folder holds no run, or only damaged checkpoints."""
    tag = os.path.join(output_dir, "last_checkpoint")
    named = None
    if os.path.isfile(tag):
        try:
            with open(tag, encoding="utf-8") as f:
                named = os.path.join(output_dir, f.read().strip())
        except (OSError, UnicodeDecodeError) as e:
            logger.warning(
                "--resume: %s is unreadable (%s); looking for the newest intact checkpoint instead",
                tag,
                first_line(e),
            )
    files = sorted(
        glob.glob(os.path.join(output_dir, "model_*.pth")), key=os.path.getmtime, reverse=True
    )
    if named is not None and not os.path.isfile(named):
        logger.warning(
            "--resume: %s names %s, which does not exist; looking for the newest "
            "intact checkpoint instead",
            tag,
            named,
        )
    order = ([named] if named in files else []) + [f for f in files if f != named]
    for path in order:
        problem = file_problem(path)
        if problem is None:
            if path != named:
                logger.warning(
                    "--resume: continuing from %s, the newest intact checkpoint in %s",
                    path,
                    output_dir,
                )
            return path
        logger.warning("--resume: skipping %s: it is %s", path, problem)
    if not files and os.path.isfile(os.path.join(output_dir, RUN_CONFIG_NAME)):
        logger.warning(
            "--resume: %s holds a run stopped before its first checkpoint; it starts "
            "again from iteration 0",
            output_dir,
        )
        return None
    what = "holds no checkpoint" if not files else "holds no intact checkpoint"
    raise FileError(
        f"--resume: OUTPUT_DIR {output_dir} {what} to resume from: run without --resume to "
        "start a new run there, or set OUTPUT_DIR to the folder of the run to continue"
    )


def remove_partial_checkpoints(output_dir: str) -> None:
    """Delete the temporary files of checkpoint writes that a kill cut short (hidden
    ``.model_*.pth.*.tmp`` / ``.last_checkpoint.*.tmp`` files of :mod:`nd_det.utils.atomic_file`;
    a checkpoint's size each)."""
    for pattern in (".model_*.pth.*.tmp", ".last_checkpoint.*.tmp"):
        for path in glob.glob(os.path.join(output_dir, pattern)):
            try:
                os.unlink(path)
                logger.info("--resume: removed %s, a checkpoint write cut short", path)
            except OSError as e:
                logger.warning("--resume: cannot remove %s (%s)", path, first_line(e))
