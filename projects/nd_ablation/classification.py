"""The classification half of the ablation: a ResNet-20 teacher, its class means, then one
ResNet-8 student run per (method, seed), on a fixed subset of Fashion-MNIST (the Debian package
dataset-fashion-mnist; scikit-learn's digits for the quick run), through
``nd_det.classification``'s own trainer.  Each function is a job for
:func:`nd_common.jobs.run_jobs`."""

import os

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader

from nd_det.class_means import load_class_means
from nd_det.class_means.classification import extract_classification_main
from nd_det.classification import build_classifier, get_cfg, run_training
from nd_det.classification.checkpoint import load_weights
from nd_det.classification.data import build_dataset
from nd_det.losses import nd_mechanism

from .plan import Method, Sizes, run_folder, teacher_paths

TEACHER_MODEL = "resnet20"
STUDENT_MODEL = "resnet8"


def setting(sizes: Sizes) -> str:
    return (
        f"{sizes.cls_dataset}, {sizes.cls_train_images} training images, "
        f"{sizes.cls_epochs} epochs; {TEACHER_MODEL} teacher -> {STUDENT_MODEL} student"
    )


def run_config(model: str, output_dir: str, sizes: Sizes, seed: int, distill=None):
    """A training config of the ablation's recipe: SGD (Nesterov, momentum 0.9, weight decay
    5e-4), LR 0.1 with a cosine schedule, ``sizes.cls_epochs`` epochs, one evaluation on the
    test split at the end; ``distill``: the ``distill`` node's values."""
    cfg = get_cfg()
    cfg.model.name = model
    cfg.data.name = sizes.cls_dataset
    cfg.data.train_subset = sizes.cls_train_images
    cfg.data.test_subset = sizes.cls_test_images or None
    cfg.data.subset_seed = cfg.data.num_workers = 0
    cfg.solver.epochs = sizes.cls_epochs
    cfg.solver.batch_size = sizes.cls_batch_size
    cfg.solver.eval_batch_size = 500
    cfg.solver.lr, cfg.solver.lr_schedule, cfg.solver.weight_decay = 0.1, "cosine", 5.0e-4
    # fvcore checks each key and type (a float where the default is a float)
    cfg.merge_from_other_cfg(CfgNode({"distill": distill or {}}))
    cfg.train.output_dir, cfg.train.seed, cfg.train.device = output_dir, seed, "cpu"
    cfg.train.eval_period, cfg.train.log_period, cfg.train.tensorboard = (
        sizes.cls_epochs,
        1000,
        False,
    )
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
            "--config-file",
            paths["config"],
            "--output",
            paths["class_means"],
            "--overwrite",
            "model.weights",
            paths["weights"],
        ]
    )
    return {"metrics": {"top1": top1}}


def student_job(root: str, method: Method, seed: int, sizes: Sizes) -> dict:
    """Train ResNet-8 with ``method`` and ``seed``; its test top-1 and embedding geometry."""
    paths = teacher_paths(root, "classification")
    distill = {"losses": list(method.losses), **method.terms}
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
    """What ND acts on (protocol: docs/ablation.md; ``nd_det.losses.nd_mechanism``): over the
    test images, the mean penultimate feature norm of the student over the teacher's, and the
    mean cosine between each student feature and the teacher's class mean of its label."""
    dataset, info = build_dataset(cfg.data, train=False, augment=False)
    models = {}
    for name, model, weights in (
        ("student", STUDENT_MODEL, student_weights),
        ("teacher", TEACHER_MODEL, paths["weights"]),
    ):
        models[name] = build_classifier(
            model, info.num_classes, info.in_channels, info.image_size
        ).eval()
        load_weights(models[name], weights, what=name)
    parts = {"student": [], "teacher": [], "labels": []}
    for images, labels in DataLoader(dataset, batch_size=500):
        for name in ("student", "teacher"):
            parts[name].append(models[name](images).embedding)
        parts["labels"].append(labels)
    s, t, labels = (torch.cat(parts[k]) for k in ("student", "teacher", "labels"))
    means = load_class_means(paths["class_means"]).means
    return {
        **{k: float(v) for k, v in nd_mechanism(s, t, labels, means).items()},
        "samples": len(labels),
    }
