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

import torch
from detectron2.config import LazyConfig, instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, input_stage
from ..export.student import (
    EXPORT_CONFIG_NAME,
    EXPORT_WEIGHTS_NAME,
    StudentExport,
    check_output_dir,
    write_export_folder,
)
from ..modeling.lazy import plain_student_model
from ..modeling.student_checkpoint import load_student_checkpoint
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


def _loads_in_plain_detectron2(config: str) -> None:
    """The written config.yaml builds its model in plain detectron2's LazyConfig path."""
    with input_stage("the exported config, read by plain detectron2"), torch.device("meta"):
        instantiate(LazyConfig.load(config).model)


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
        write_export_folder(output_dir, text, state, _loads_in_plain_detectron2)
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
