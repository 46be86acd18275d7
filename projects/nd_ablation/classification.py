"""The classification half of the ablation: a ResNet-20 teacher, its class means, then one
ResNet-8 student run per (method, seed), on a fixed subset of Fashion-MNIST (the Debian package
dataset-fashion-mnist; scikit-learn's digits for the quick run), through
``nd_det.classification``'s own trainer.  Each function is a job for
:func:`nd_det.utils.parallel.run_jobs`."""
import os
from typing import Dict

from nd_det.classification import run_training
from nd_det.classification.cli import extract_class_means_main
from nd_det.classification.config import DEFAULTS, check_values, merge_config
from .plan import Method, Sizes, run_folder, teacher_paths

__all__ = ["TEACHER_MODEL", "STUDENT_MODEL", "run_config", "teacher_job", "student_job"]

TEACHER_MODEL = "resnet20"
STUDENT_MODEL = "resnet8"


def run_config(model: str, output_dir: str, sizes: Sizes, seed: int, distill=None) -> Dict:
    """A checked training config of the ablation's recipe: SGD (Nesterov, momentum 0.9, weight
    decay 5e-4), LR 0.1 with a cosine schedule, ``sizes.cls_epochs`` epochs, one evaluation on
    the test split at the end."""
    cfg = merge_config(DEFAULTS, {
        "model": {"name": model},
        "data": {"name": sizes.cls_dataset, "train_subset": sizes.cls_train_images,
                 "test_subset": sizes.cls_test_images or None, "subset_seed": 0,
                 "num_workers": 0},
        "solver": {"epochs": sizes.cls_epochs, "batch_size": sizes.cls_batch_size,
                   "eval_batch_size": 500, "lr": 0.1, "lr_schedule": "cosine",
                   "weight_decay": 5.0e-4},
        "distill": distill or {},
        "train": {"output_dir": output_dir, "seed": seed, "device": "cpu",
                  "eval_period": sizes.cls_epochs, "log_period": 1000, "tensorboard": False},
    })
    check_values(cfg, "the ablation's classification recipe")
    return cfg


def _trained_top1(model: str, folder: str, sizes: Sizes, seed: int, distill=None) -> float:
    """Train with the ablation's recipe (its log lines discarded); the final test top-1."""
    with open(os.devnull, "w") as quiet:
        result = run_training(run_config(model, folder, sizes, seed, distill), stream=quiet)
    return float(result.last_eval["top1"])


def teacher_job(root: str, sizes: Sizes, seed: int = 0) -> Dict:
    """Train the teacher, then its class means over the same training subset."""
    paths = teacher_paths(root, "classification")
    top1 = _trained_top1(TEACHER_MODEL, paths["folder"], sizes, seed)
    extract_class_means_main(["--config", paths["config"], "--weights", paths["weights"],
                              "--output", paths["class_means"]])
    return {"metrics": {"top1": top1}}


def student_job(root: str, method: Method, seed: int, sizes: Sizes) -> Dict:
    """Train ResNet-8 with ``method`` and ``seed``; its test top-1."""
    paths = teacher_paths(root, "classification")
    distill = {"losses": dict(method.terms)}
    if not method.is_baseline:
        distill.update(teacher={"name": TEACHER_MODEL, "weights": paths["weights"],
                                "config": paths["config"]},
                       class_means=paths["class_means"],
                       warm_up_epochs=sizes.cls_warm_up_epochs)
    folder = run_folder(root, "classification", method, seed)
    return {"metrics": {"top1": _trained_top1(STUDENT_MODEL, folder, sizes, seed, distill)}}
