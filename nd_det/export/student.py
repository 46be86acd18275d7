"""Export the student of a distillation run: a plain detectron2 config and a student-only
checkpoint, in one folder (``tools/export_student.py`` is the command line)::

    config.yaml       a plain detectron2 config: META_ARCHITECTURE GeneralizedRCNN, no
                      MODEL.DISTILL, MODEL.WEIGHTS "model_final.pth" (relative to the folder)
    model_final.pth   {"model": student state dict}, nothing else

The pair loads in stock detectron2 (``get_cfg().merge_from_file``, ``DefaultPredictor``,
``DefaultTrainer.test``) without importing nd_det, unless the student's backbone is one only
nd-det provides (``build_torchvision_fpn_backbone``: MobileNetV2, MobileNetV3 or any torchvision
classifier under FPN): then the config keeps ``MODEL.TORCHVISION`` and the loading process must
``import nd_det.modeling`` (which registers it) and call ``nd_det.config.add_backbone_config(cfg)``
first.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

from ..config import add_backbone_config
from ..distill import terms_with_modules
from ..errors import ConfigError, input_stage
from ..modeling.student_checkpoint import (
    BACKBONE_CONFIG_NODES,
    load_student_checkpoint,
    plain_student_cfg,
    uses_nd_det_backbone,
)
from ..modeling.weights import is_url, local_weights_file
from ..utils.atomic_file import atomic_torch_save, atomic_write_text, current_umask
from ..utils.paths import check_overwrite, check_writable, writing
from ..utils.skip_init import without_random_init
from ..utils.text import short_list

__all__ = [
    "EXPORT_CONFIG_NAME",
    "EXPORT_WEIGHTS_NAME",
    "StudentExport",
    "export_student",
    "check_output_dir",
    "write_export_folder",
]

# the two files of an export folder, and the deploy files tools/export_model.py may add to it
# (each with its .json record)
EXPORT_CONFIG_NAME = "config.yaml"
EXPORT_WEIGHTS_NAME = "model_final.pth"
DEPLOY_FILE_NAMES = {"pt2": "model.pt2", "onnx": "model.onnx", "torchscript": "model.ts"}
DEPLOY_RECORD_SUFFIX = ".json"
_EXPORT_FILES = {EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME} | {
    name + suffix for name in DEPLOY_FILE_NAMES.values() for suffix in ("", DEPLOY_RECORD_SUFFIX)
}


def _with_model_keys(cfg: CfgNode, **keys) -> CfgNode:
    """A clone of ``cfg`` with these ``MODEL`` keys changed."""
    changed = cfg.clone()
    changed.defrost()
    changed.MODEL.update(keys)
    changed.freeze()
    return changed


def _backbone_note(student: CfgNode) -> list[str]:
    if not uses_nd_det_backbone(student):
        return []
    return [
        f"the student's backbone {student.MODEL.BACKBONE.NAME} exists only in nd-det: "
        f"config.yaml keeps nd-det's backbone keys "
        f"(MODEL.{BACKBONE_CONFIG_NODES.get(student.MODEL.BACKBONE.NAME, '?')}), and the process "
        "that loads it must run `import nd_det.modeling` (registers the backbone) and "
        "`nd_det.config.add_backbone_config(cfg)` before cfg.merge_from_file (everything else "
        "is plain detectron2)."
    ]


_WEIGHTS_HINT = "give the .pth a detectron2 trainer wrote (e.g. <OUTPUT_DIR>/model_final.pth)"


def _config_text(cfg: CfgNode, notes_for_yaml: list[str]) -> str:
    header = [
        "Student exported by nd-det (tools/export_student.py): a plain detectron2 config.",
        "MODEL.WEIGHTS is relative to this file's folder: before building, set it to",
        f'os.path.join(<this folder>, "{EXPORT_WEIGHTS_NAME}") (or pass MODEL.WEIGHTS',
        f"<this folder>/{EXPORT_WEIGHTS_NAME} on a detectron2 command line).",
    ] + notes_for_yaml
    return "".join(f"# {line}\n" for line in header) + cfg.dump()


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """The export's folder: new, empty, or (with ``overwrite``) a previous export, whose files
    are named as replaced; never a folder with other files (a training run's)."""
    check_writable(output_dir, "--output", folder=True)
    others = sorted(
        set(os.listdir(output_dir) if os.path.isdir(output_dir) else ()) - _EXPORT_FILES
    )
    if others:
        raise ConfigError(
            f"--output {output_dir} holds files not of an export ({short_list(others, 4)})"
        )
    check_overwrite(output_dir, "--output", overwrite)


def _move_into_place(staging: str, output_dir: str) -> None:
    """Rename the finished ``staging`` folder to ``output_dir``; a previous export there is
    swapped out first and deleted only after the new one is in place."""
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        os.replace(staging, output_dir)
        return
    parent, base = os.path.split(output_dir)
    old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
    os.replace(output_dir, old)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        os.replace(old, output_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_export_folder(
    output_dir: str,
    text: str,
    state: dict[str, torch.Tensor],
    check_config: Optional[Callable[[str], None]] = None,
) -> None:
    """Write ``config.yaml`` (``text``) and ``model_final.pth`` (``{"model": state}``) into a
    hidden folder next to ``output_dir``, run ``check_config(its config.yaml)``, then rename
    the folder into place (a previous export there is swapped out and deleted only after):
    ``output_dir`` is never seen half-written."""
    parent, base = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        config_path = os.path.join(staging, EXPORT_CONFIG_NAME)
        atomic_write_text(text, config_path)
        if check_config is not None:
            check_config(config_path)
        atomic_torch_save({"model": state}, os.path.join(staging, EXPORT_WEIGHTS_NAME))
        _move_into_place(staging, output_dir)
    finally:  # nothing is left there once the folder has been moved into place
        shutil.rmtree(staging, ignore_errors=True)


def _loads_in_detectron2(needs_nd_det: bool) -> Callable[[str], None]:
    """The check of an exported yaml: plain detectron2 (with nd-det's backbone keys if the
    student needs them) merges it."""

    def merge(path: str) -> None:
        with input_stage("the exported config, read by plain detectron2"):
            (add_backbone_config(get_cfg()) if needs_nd_det else get_cfg()).merge_from_file(path)

    return merge


@dataclass
class StudentExport:
    """What :func:`export_student` wrote."""

    output_dir: str
    config_file: str
    weights_file: str
    num_tensors: int
    needs_nd_det: bool
    dropped_modules: list[str] = field(default_factory=list)  # e.g. distill_terms.* keys
    dropped_entries: list[str] = field(default_factory=list)  # e.g. optimizer, iteration
    notes: list[str] = field(default_factory=list)

    @classmethod
    def written(cls, output_dir: str, state: dict, checkpointer, needs_nd_det: bool, notes=()):
        """The record of a folder :func:`write_export_folder` wrote with ``state``, from the
        training checkpoint ``checkpointer`` (a StudentCheckpointer) read."""
        return cls(
            output_dir=output_dir,
            config_file=os.path.join(output_dir, EXPORT_CONFIG_NAME),
            weights_file=os.path.join(output_dir, EXPORT_WEIGHTS_NAME),
            num_tensors=len(state),
            needs_nd_det=needs_nd_det,
            dropped_modules=checkpointer.training_only_keys,
            dropped_entries=sorted(  # optimizer, iteration, ...
                k
                for k in checkpointer.extra
                if k not in ("model", "matching_heuristics", "__author__")
            ),
            notes=list(notes),
        )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_distilled(
    cfg: CfgNode, student: CfgNode, weights: str, local: str, dropped_modules: list[str]
) -> None:
    """Refuse weights that are not those of this distillation run (``cfg``, whose plain student
    is ``student``): the teacher's own checkpoint, or a checkpoint without the modules this
    config's terms train."""
    distilled = cfg.MODEL.META_ARCHITECTURE != student.MODEL.META_ARCHITECTURE
    losses = list(cfg.MODEL.DISTILL.LOSSES) if distilled else []
    teacher = cfg.MODEL.DISTILL.TEACHER_WEIGHTS if losses else ""
    hint = "give the run's checkpoint, or pass --allow-non-distilled-weights"
    if teacher and (weights == teacher or (not is_url(teacher) and _same_file(local, teacher))):
        raise ConfigError(
            f"--weights {weights} is the teacher's checkpoint (MODEL.DISTILL.TEACHER_WEIGHTS), "
            f"not a distilled student: {hint}"
        )
    if losses and terms_with_modules(losses) and not dropped_modules:
        raise ConfigError(
            f"--weights {weights} holds no distillation-module tensors (distill_terms.*), but a "
            f"run of this config ({'+'.join(losses)}) trains them: {hint}"
        )


def export_student(
    cfg: CfgNode,
    weights: str,
    output_dir: str,
    overwrite: bool = False,
    allow_non_distilled: bool = False,
) -> StudentExport:
    """Write ``config.yaml`` + ``model_final.pth`` of the student of the distillation config
    ``cfg``, with the weights of the training checkpoint ``weights`` (path or URL), into
    ``output_dir``.  Raises ConfigError (nothing written) on any bad input, including
    weights that are not those of a run of ``cfg`` (unless ``allow_non_distilled``)."""
    output_dir = os.path.abspath(output_dir)
    check_output_dir(output_dir, overwrite)
    local = local_weights_file("--weights", weights)  # before any model is built
    student_cfg = plain_student_cfg(cfg)
    notes = _backbone_note(student_cfg)
    needs_nd_det = bool(notes)
    with without_random_init():  # every value comes from the checkpoint; no GPU needed
        model = build_model(_with_model_keys(student_cfg, DEVICE="cpu"))
    # every key must match in name and shape; what else the checkpoint held is reported
    checkpointer = load_student_checkpoint(
        model, weights, "--weights", _WEIGHTS_HINT, error=ConfigError
    )
    if not allow_non_distilled:
        _check_distilled(cfg, student_cfg, weights, local, checkpointer.training_only_keys)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    export_cfg = _with_model_keys(student_cfg, WEIGHTS=EXPORT_WEIGHTS_NAME)
    with writing("--output", output_dir, "the folder was left as it was"):
        write_export_folder(
            output_dir, _config_text(export_cfg, notes), state, _loads_in_detectron2(needs_nd_det)
        )
    return StudentExport.written(output_dir, state, checkpointer, needs_nd_det, notes)
