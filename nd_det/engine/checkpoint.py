"""Crash-safe training checkpoints.

``AtomicCheckpointer`` is detectron2's DetectionCheckpointer with two guarantees:

* a checkpoint file, and the ``last_checkpoint`` tag, appear under their final name only when
  complete (written to a temporary file in the same folder, flushed, fsynced, then renamed), so a
  run killed at any moment leaves either the previous or the new checkpoint, never half of one;
* a model holding a NaN/inf weight is never saved: the save raises instead;
* a torchvision ImageNet file (``features.0.0.weight`` ...) given as MODEL.WEIGHTS loads, strictly,
  into a ``build_torchvision_fpn_backbone`` student (:mod:`nd_det.modeling.torchvision_weights`).

``resume_checkpoint`` picks what ``--resume`` continues from: the tagged checkpoint, or the newest
intact one (with a warning naming what it skipped), or a clear stop when there is none.
"""
import glob
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..errors import FileError, NonFiniteError
from ..modeling.torchvision_weights import TorchvisionWeightsMixin
from ..utils.atomic_file import atomic_torch_save, atomic_write_text
from ..utils.checkpoint_files import file_problem
from ..utils.text import first_line

__all__ = ["AtomicCheckpointer",
           "check_checkpoint_file", "resume_checkpoint"]

logger = logging.getLogger(__name__)


class AtomicCheckpointer(TorchvisionWeightsMixin, DetectionCheckpointer):
    """DetectionCheckpointer with the guarantees of the module docstring."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        bad = [k for k, v in data["model"].items() if isinstance(v, torch.Tensor)
               and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteError(
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
        atomic_torch_save(data, path)  # makes save_dir when missing
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))


def check_checkpoint_file(path: str, what: str) -> None:
    """Raise FileError naming ``what`` unless ``path`` is a complete checkpoint."""
    problem = file_problem(path)
    if problem:
        raise FileError(f"{what} {path} is {problem}: give a complete checkpoint (a "
                                  "model_final.pth a training run wrote, or a model-zoo .pkl)")


def resume_checkpoint(output_dir: str) -> str:
    """The checkpoint a ``--resume`` of ``output_dir`` continues from: the one ``last_checkpoint``
    names, else (that tag missing, unreadable or naming a damaged file) the newest intact
    ``model_*.pth``, with a warning naming what was skipped.  Raises FileError when
    there is none."""
    tag = os.path.join(output_dir, "last_checkpoint")
    named = None
    if os.path.isfile(tag):
        try:
            with open(tag, encoding="utf-8") as f:
                named = os.path.join(output_dir, f.read().strip())
        except (OSError, UnicodeDecodeError) as e:
            logger.warning("--resume: %s is unreadable (%s); looking for the newest intact "
                           "checkpoint instead", tag, first_line(e))
    files = sorted(glob.glob(os.path.join(output_dir, "model_*.pth")),
                   key=os.path.getmtime, reverse=True)
    if named is not None and not os.path.isfile(named):
        logger.warning("--resume: %s names %s, which does not exist; looking for the newest "
                       "intact checkpoint instead", tag, named)
    order = ([named] if named in files else []) + [f for f in files if f != named]
    for path in order:
        problem = file_problem(path)
        if problem is None:
            if path != named:
                logger.warning("--resume: continuing from %s, the newest intact checkpoint in %s",
                               path, output_dir)
            return path
        logger.warning("--resume: skipping %s: it is %s", path, problem)
    what = "holds no checkpoint" if not files else "holds no intact checkpoint"
    raise FileError(
        f"--resume: OUTPUT_DIR {output_dir} {what} to resume from: run without --resume to "
        "start a new run there, or set OUTPUT_DIR to the folder of the run to continue")
