"""The classification half of the ablation: a ResNet-20 teacher, its class means, then one
ResNet-8 student run per (method, seed), on a fixed subset of Fashion-MNIST (the Debian package
dataset-fashion-mnist; scikit-learn's digits for the quick run), through
``nd_det.classification``'s own trainer.  Each function is a job for
:func:`nd_common.jobs.run_jobs`."""

import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from nd_det.class_means import load_class_means
from nd_det.class_means.classification import extract_classification_main
from nd_det.classification import build_classifier, run_training
from nd_det.classification.checkpoint import load_model_weights
from nd_det.classification.config import DEFAULTS, check_values, merge_config
from nd_det.classification.data import build_dataset

from .plan import Method, Sizes, run_folder, teacher_paths

TEACHER_MODEL = "resnet20"
STUDENT_MODEL = "resnet8"


def setting(sizes: Sizes) -> str:
    return (
        f"{sizes.cls_dataset}, {sizes.cls_train_images} training images, "
        f"{sizes.cls_epochs} epochs; {TEACHER_MODEL} teacher -> {STUDENT_MODEL} student"
    )


def run_config(model: str, output_dir: str, sizes: Sizes, seed: int, distill=None):
    """A checked training config of the ablation's recipe: SGD (Nesterov, momentum 0.9, weight
    decay 5e-4), LR 0.1 with a cosine schedule, ``sizes.cls_epochs`` epochs, one evaluation on
    the test split at the end."""
    cfg = merge_config(
        DEFAULTS,
        {
            "model": {"name": model},
            "data": {
                "name": sizes.cls_dataset,
                "train_subset": sizes.cls_train_images,
                "test_subset": sizes.cls_test_images or None,
                "subset_seed": 0,
                "num_workers": 0,
            },
            "solver": {
                "epochs": sizes.cls_epochs,
                "batch_size": sizes.cls_batch_size,
                "eval_batch_size": 500,
                "lr": 0.1,
                "lr_schedule": "cosine",
                "weight_decay": 5.0e-4,
            },
            "distill": distill or {},
            "train": {
                "output_dir": output_dir,
                "seed": seed,
                "device": "cpu",
                "eval_period": sizes.cls_epochs,
                "log_period": 1000,
                "tensorboard": False,
            },
        },
    )
    check_values(cfg, "the ablation's classification recipe")
    return cfg


def _train(model: str, folder: str, sizes: Sizes, seed: int, distill=None):
    """Train with the ablation's recipe (its log lines discarded); its config and final top-1."""
    cfg = run_config(model, folder, sizes, seed, distill)
    with open(os.devnull, "w") as quiet:
        result = run_training(cfg, stream=quiet)
    return cfg, float(result.last_eval["top1"])


def teacher_job(root: str, sizes: Sizes, seed: int = 0) -> dict:
    """Train the teacher, then its class means over the same training subset."""
    paths = teacher_paths(root, "classification")
    _, top1 = _train(TEACHER_MODEL, paths["folder"], sizes, seed)
    extract_classification_main(
        [
            "--config",
            paths["config"],
            "--weights",
            paths["weights"],
            "--output",
            paths["class_means"],
        ]
    )
    return {"metrics": {"top1": top1}}


def student_job(root: str, method: Method, seed: int, sizes: Sizes) -> dict:
    """Train ResNet-8 with ``method`` and ``seed``; its test top-1 and embedding geometry."""
    paths = teacher_paths(root, "classification")
    distill = {"losses": dict(method.terms)}
    if not method.is_baseline:
        distill.update(
            teacher={"name": TEACHER_MODEL, "weights": paths["weights"], "config": paths["config"]},
            class_means=paths["class_means"],
            warm_up_epochs=sizes.cls_warm_up_epochs,
        )
    folder = run_folder(root, "classification", method, seed)
    cfg, top1 = _train(STUDENT_MODEL, folder, sizes, seed, distill)
    return {
        "metrics": {"top1": top1},
        "geometry": embedding_geometry(cfg, os.path.join(folder, "model_final.pth"), paths),
    }


@torch.no_grad()
def embedding_geometry(cfg, student_weights: str, paths: dict) -> dict[str, float]:
    """What ND acts on (protocol: docs/ablation.md): over the test images, the mean penultimate
    feature norm of the student over the teacher's, and the mean cosine between each student
    feature and the teacher's class mean of its label."""
    dataset, info = build_dataset(cfg["data"], train=False, augment=False)
    models = {}
    for name, model, weights in (
        ("student", STUDENT_MODEL, student_weights),
        ("teacher", TEACHER_MODEL, paths["weights"]),
    ):
        models[name] = build_classifier(
            model, info.num_classes, info.in_channels, info.image_size
        ).eval()
        load_model_weights(models[name], weights, what=name)
    means = load_class_means(paths["class_means"]).means
    norms = {"student": [], "teacher": []}
    cosines = []
    for images, labels in DataLoader(dataset, batch_size=500):
        s, t = models["student"](images).embedding, models["teacher"](images).embedding
        norms["student"].append(s.norm(dim=1))
        norms["teacher"].append(t.norm(dim=1))
        cosines.append(F.cosine_similarity(s, means[labels], dim=1))
    return {
        "norm_ratio": float(
            torch.cat(norms["student"]).mean() / torch.cat(norms["teacher"]).mean()
        ),
        "cosine_to_class_mean": float(torch.cat(cosines).mean()),
        "samples": int(sum(c.numel() for c in cosines)),
    }
