"""The student of a LazyConfig run, for plain detectron2's LazyConfig path::

    config.yaml       ``model``: the student alone (GeneralizedRCNN, no teacher, no terms, every
                      value written out), as detectron2's ``LazyConfig.save`` writes it
    model_final.pth   {"model": the student's state dict}, nothing else

Loaded without nd_det (unless the student's modules are nd-det's own: ``locate`` imports the
module each ``_target_`` names)::

    cfg = LazyConfig.load("export/config.yaml")
    model = instantiate(cfg.model).eval()
    DetectionCheckpointer(model).load("export/model_final.pth")

The folder is written next to ``output_dir`` and renamed into place (never seen half-written),
as :func:`nd_det.export.student.export_student` does for a yacs run.
"""

import os
import shutil
import tempfile

import torch
from detectron2.config import LazyConfig, instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, input_stage
from ..export.student import (
    EXPORT_CONFIG_NAME,
    EXPORT_WEIGHTS_NAME,
    StudentExport,
    check_output_dir,
)
from ..modeling.lazy import plain_student_model
from ..modeling.student_checkpoint import load_student_checkpoint
from ..utils.atomic_file import atomic_torch_save, atomic_write_text, current_umask
from ..utils.paths import writing
from .lazy_config import lazy_config_text

__all__ = ["export_lazy_student", "is_lazy_run_config"]

_HEADER = (
    "# Student exported by nd-det from a LazyConfig run: plain detectron2's LazyConfig path,\n"
    "#   model = instantiate(LazyConfig.load(<this file>).model).eval()\n"
    f"#   DetectionCheckpointer(model).load(<this folder>/{EXPORT_WEIGHTS_NAME})\n"
)


def is_lazy_run_config(path: str) -> bool:
    """A LazyConfig file: a ``.py`` one, or the yaml ``LazyConfig.save`` wrote (a run's
    config.yaml: a ``model`` node with a ``_target_``)."""
    if path.endswith(".py"):
        return True
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16)
    return "_target_" in head and any(line.startswith("model:") for line in head.splitlines())


def _write(output_dir: str, text: str, state: dict) -> None:
    parent, base = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        config = os.path.join(staging, EXPORT_CONFIG_NAME)
        atomic_write_text(text, config)
        with input_stage("the exported config, read by plain detectron2"), torch.device("meta"):
            instantiate(LazyConfig.load(config).model)
        atomic_torch_save({"model": state}, os.path.join(staging, EXPORT_WEIGHTS_NAME))
        old = None
        if os.path.isdir(output_dir) and os.listdir(output_dir):  # a previous export (--overwrite)
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.replace(output_dir, old)
        os.replace(staging, output_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_lazy_student(
    cfg: DictConfig, weights: str, output_dir: str, overwrite: bool = False
) -> StudentExport:
    """Write ``config.yaml`` + ``model_final.pth`` of the student of the LazyConfig ``cfg``
    with the weights of the training checkpoint ``weights`` (every student key must match)."""
    output_dir = os.path.abspath(output_dir)
    check_output_dir(output_dir, overwrite)
    node = plain_student_model(cfg.model)
    with input_stage("the student (model)"):
        model = instantiate(node)
    checkpointer = load_student_checkpoint(
        model, weights, "--weights", "give the .pth the training run wrote", error=ConfigError
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    text = _HEADER + lazy_config_text(
        OmegaConf.create({"model": node}, flags={"allow_objects": True})
    )
    with writing("--output", output_dir, "free space or fix its permissions, then export again"):
        _write(output_dir, text, state)
    return StudentExport(
        output_dir=output_dir,
        config_file=os.path.join(output_dir, EXPORT_CONFIG_NAME),
        weights_file=os.path.join(output_dir, EXPORT_WEIGHTS_NAME),
        num_tensors=len(state),
        needs_nd_det=False,
        dropped_modules=checkpointer.training_only_keys,
        dropped_entries=sorted(
            k for k in checkpointer.extra if k not in ("model", "matching_heuristics", "__author__")
        ),
    )
