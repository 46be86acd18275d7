"""Checks of a run's set-up made before anything else: before the process group, before any
model, dataset or data loader is built and before anything is written.

Each check raises a :class:`~nd_det.errors.UserError` naming the config key, file or flag and the
fix.  Under torchrun every process runs them on its own (no collective), so a mistake stops each
process before it could wait for another.  What needs a built model (weights of another
architecture, class means of another shape or teacher, ReviewKD levels) is checked while the run
is built, still before any data loader and before anything is written
(:class:`~.trainer.ClassificationTrainer`).
"""

import os
from typing import Optional

from ..errors import ConfigError, FileError
from ..utils.paths import check_writable
from .checkpoint import check_weights_file
from .data import check_dataset, mixes_labels
from .distributed import check_device, world_size_from_env
from .loss_terms import check_loss_terms, loss_term_class
from .models import check_classifier_name
from .teacher import check_teacher_config, read_class_means_file

__all__ = ["check_training_setup", "check_extraction_setup", "check_batch_split"]


def _check_model_and_data(cfg: dict) -> None:
    check_device(cfg["train"]["device"])
    check_classifier_name(
        cfg["model"]["name"], "model.name", float(cfg["model"].get("drop_path_rate", 0.0))
    )
    check_dataset(cfg["data"])


def check_batch_split(solver: dict, world_size: int) -> int:
    """The per-process batch: ``solver.batch_size`` (the total) over ``world_size`` processes."""
    total = int(solver["batch_size"])
    if total % world_size:
        raise ConfigError(
            f"solver.batch_size={total} is the total over the {world_size} "
            "processes torchrun started and must divide evenly: set it to a "
            f"multiple of {world_size}, e.g. "
            f"{max(1, total // world_size) * world_size}"
        )
    return total // world_size


def _check_solver(solver: dict, world_size: int) -> None:
    check_batch_split(solver, world_size)
    if solver["optimizer"] == "sgd" and solver["nesterov"] and not float(solver["momentum"]) > 0:
        raise ConfigError(
            f"solver.nesterov is true but solver.momentum is {solver['momentum']}: "
            "Nesterov needs a positive momentum; set solver.nesterov=false or "
            "give a momentum"
        )


def _check_distillation(distill: dict, data: dict) -> None:
    check_teacher_config(distill["teacher"])
    has_teacher = bool(distill["teacher"].get("name"))
    check_loss_terms(distill["losses"], has_teacher=has_teacher)
    hard = [n for n in distill["losses"] if loss_term_class(n).needs_hard_labels]
    if hard and mixes_labels(data):
        raise ConfigError(
            f"loss term {hard[0]!r} needs each image's own label, but "
            "data.mixup_alpha / data.cutmix_alpha mix the labels: set both to 0 "
            f"or remove {hard[0]!r} from distill.losses"
        )
    if has_teacher and "nd" in distill["losses"]:
        read_class_means_file(distill.get("class_means"))


def check_training_setup(
    cfg: dict, resume: Optional[str] = None, eval_only: bool = False, weights: Optional[str] = None
) -> None:
    """Everything about a training (or ``eval_only`` evaluation) run that needs no model: the
    device, the model / dataset / loss-term names and parameters, the files the config points at,
    the batch size over the torchrun processes and that ``train.output_dir`` can be written."""
    _check_model_and_data(cfg)
    if eval_only:
        source = weights or cfg["model"].get("weights")
        if not source:
            raise ConfigError(
                "--eval-only needs the weights to evaluate: pass --weights "
                "output/<run>/model_final.pth (or set model.weights); without them the accuracy "
                "would be that of a randomly initialised model"
            )
        check_weights_file(source, "evaluated", "--weights" if weights else "model.weights")
    else:
        _check_solver(cfg["solver"], world_size_from_env())
        if cfg["model"].get("weights"):
            check_weights_file(cfg["model"]["weights"], "initial", "model.weights")
        _check_distillation(cfg["distill"], cfg["data"])
        if resume not in (None, "auto") and not os.path.isfile(resume):
            raise FileError(
                f"--resume {resume}: file not found; give the "
                "last_checkpoint.pth of the run to continue, or --resume "
                "without a value for <train.output_dir>/last_checkpoint.pth"
            )
    check_writable(cfg["train"]["output_dir"], "train.output_dir", folder=True)


def check_extraction_setup(
    cfg: dict, weights: str, output: str, batch_size: int, output_flag: str = "--output"
) -> None:
    """The same for ``tools/extract_class_means.py --task classification``: the teacher's model
    and dataset, ``--weights``, ``--batch-size`` and that ``output`` can be written."""
    _check_model_and_data(cfg)
    check_weights_file(weights, "teacher", "--weights")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give 1 or more (images per process)")
    check_writable(output, output_flag)
