"""Crash-safe training checkpoints.

``AtomicCheckpointer`` is detectron2's DetectionCheckpointer with these guarantees (the saves:
:class:`nd_det.utils.checkpointer.AtomicCheckpointer`, shared with the classification trainer):

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

from ..errors import FileError
from ..modeling.torchvision_weights import TorchvisionWeightsMixin
from ..modeling.weights import SafeCheckpointer
from ..utils import checkpointer
from ..utils.checkpoint_files import file_problem
from ..utils.text import first_line
from .setup import RUN_CONFIG_NAME

__all__ = [
    "AtomicCheckpointer",
    "resume_checkpoint",
    "remove_partial_checkpoints",
]

logger = logging.getLogger(__name__)


class AtomicCheckpointer(
    TorchvisionWeightsMixin, checkpointer.AtomicCheckpointer, SafeCheckpointer
):
    """detectron2's checkpointer (its file formats, read as data: :class:`SafeCheckpointer`)
    with the crash-safe saves of :class:`nd_det.utils.checkpointer.AtomicCheckpointer` and
    torchvision files routed to a torchvision bottom-up (the module docstring)."""


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
