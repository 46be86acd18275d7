"""The student of a LazyConfig run, for plain detectron2's LazyConfig path::

    config.yaml       ``model``: the student alone (GeneralizedRCNN, no teacher, no terms, every
                      value written out), as detectron2's ``LazyConfig.save`` writes it
    input             the test input the student was trained for: channel order, shortest side
                      and longest-side cap of the test resize (what tools/export_model.py
                      and the deploy record need; plain detectron2 ignores it)
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
from detectron2.config import LazyConfig, get_cfg, instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, input_stage
from ..export.student import (
    EXPORT_WEIGHTS_NAME,
    StudentExport,
    check_output_dir,
    write_export_folder,
)
from ..modeling.lazy import plain_student_model
from ..modeling.student_checkpoint import load_student_checkpoint
from ..utils.paths import writing
from ..utils.skip_init import without_random_init
from .lazy_config import lazy_config_text

__all__ = ["export_lazy_student", "test_input"]

_HEADER = (
    "# Student exported by nd-det from a LazyConfig run: plain detectron2's LazyConfig path,\n"
    "#   model = instantiate(LazyConfig.load(<this file>).model).eval()\n"
    f"#   DetectionCheckpointer(model).load(<this folder>/{EXPORT_WEIGHTS_NAME})\n"
)


def _loads_in_plain_detectron2(config: str) -> None:
    """The written config.yaml builds its model in plain detectron2's LazyConfig path."""
    with input_stage("the exported config, read by plain detectron2"), torch.device("meta"):
        instantiate(LazyConfig.load(config).model)


def test_input(cfg: DictConfig) -> dict:
    """The ``input`` node of the export: the channel order and the test resize (ResizeShortestEdge)
    of ``dataloader.test.mapper`` (the order: else the model's ``input_format``), detectron2's
    defaults where absent."""
    defaults = get_cfg().INPUT
    order = OmegaConf.select(cfg, "dataloader.test.mapper.image_format", default=None)
    order = order or OmegaConf.select(cfg, "model.input_format", default=None)
    found = {"format": str(order or defaults.FORMAT)}
    found.update(min_size_test=defaults.MIN_SIZE_TEST, max_size_test=defaults.MAX_SIZE_TEST)
    for aug in OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None) or []:
        target = aug.get("_target_") if isinstance(aug, DictConfig) else None
        if getattr(target, "__name__", str(target).rsplit(".", 1)[-1]) == "ResizeShortestEdge":
            short = aug.get("short_edge_length", defaults.MIN_SIZE_TEST)
            found["min_size_test"] = int(short if isinstance(short, int) else max(short))
            found["max_size_test"] = int(aug.get("max_size", defaults.MAX_SIZE_TEST))
    return found


def export_lazy_student(
    cfg: DictConfig, weights: str, output_dir: str, overwrite: bool = False
) -> StudentExport:
    """Write ``config.yaml`` + ``model_final.pth`` of the student of the LazyConfig ``cfg``
    with the weights of the training checkpoint ``weights`` (every student key must match)."""
    output_dir = os.path.abspath(output_dir)
    check_output_dir(output_dir, overwrite)
    node = plain_student_model(cfg.model)
    with input_stage("the student (model)"), without_random_init():
        model = instantiate(node)  # the strict load replaces every value
    checkpointer = load_student_checkpoint(
        model, weights, "--weights", "give the .pth the training run wrote", error=ConfigError
    )
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    text = _HEADER + lazy_config_text(
        OmegaConf.create({"model": node, "input": test_input(cfg)}, flags={"allow_objects": True})
    )
    with writing("--output", output_dir, "free space or fix its permissions, then export again"):
        write_export_folder(output_dir, text, state, _loads_in_plain_detectron2)
    return StudentExport.written(output_dir, state, checkpointer, needs_nd_det=False)
