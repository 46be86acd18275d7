"""The detection half of the ablation: one teacher with its class means, then one student run
per (method, seed), on the ablation split of the embedded tree-crown data, with the demo's
models, trainer and evaluation.  Each function is a job for :func:`nd_common.jobs.run_jobs`: it
runs in a process of its own and returns a dict."""

import os
from typing import Optional

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from fvcore.nn import parameter_count
from nd_common.configs import (
    DEFAULT_STUDENT_CONFIG,
    DEFAULT_TEACHER_CONFIG,
    run_cfg,
    student_cfg,
    without_demo_keys,
)
from nd_common.evaluation import box_metrics
from nd_common.trainer import log_to_file, train_detector

from nd_det.class_means.detection import extract_class_means
from nd_det.losses import nd_mechanism
from nd_det.modeling import FrozenTeacher, build_plain_student, load_student_checkpoint

from .plan import Method, Sizes, run_folder, teacher_paths
from .splits import register_splits


def setting(sizes: Sizes) -> str:
    return (
        f"embedded tree crowns, ablation split; MobileNetV2-FPN teacher (ImageNet init, "
        f"{sizes.teacher_iters} iterations) -> half-width MobileNetV2-FPN student "
        f"(random init, {sizes.student_iters} iterations of 4 images)"
    )


def input_opts(sizes: Sizes) -> list[str]:
    """KEY VALUE overrides of the input size (the quick run's small images)."""
    if not sizes.det_input_size:
        return []
    s = str(sizes.det_input_size)
    return [
        "INPUT.MIN_SIZE_TRAIN",
        f"({s},)",
        "INPUT.MAX_SIZE_TRAIN",
        s,
        "INPUT.MIN_SIZE_TEST",
        s,
        "INPUT.MAX_SIZE_TEST",
        s,
    ]


def _student_cfg(root, method: Method, sizes: Sizes, seed: int, splits):
    paths = teacher_paths(root, "detection")
    return student_cfg(
        DEFAULT_STUDENT_CONFIG,
        run_folder(root, "detection", method, seed),
        sizes.student_iters,
        seed,
        "cpu",
        list(method.losses),
        paths["config"],
        paths["weights"],
        paths["class_means"],
        input_opts(sizes) + list(method.overrides),
        splits,
    )


def teacher_job(root: str, sizes: Sizes, seed: int = 0, dataset_root: Optional[str] = None) -> dict:
    """Train the teacher, extract its class means (the reference protocol, every training
    image), evaluate it; returns its metrics."""
    paths = teacher_paths(root, "detection")
    with log_to_file(os.path.join(paths["folder"], "log.txt"), console_prefix="[teacher] "):
        splits = register_splits(os.path.join(root, "detection"), dataset_root)
        cfg = run_cfg(
            DEFAULT_TEACHER_CONFIG,
            "teacher",
            paths["folder"],
            sizes.teacher_iters,
            seed,
            "cpu",
            input_opts(sizes),
            splits,
        )
        train_detector(cfg, seed, log_period=1000)
        # any distillation config with this teacher names it for the extraction
        distill_cfg = without_demo_keys(
            _student_cfg(root, Method("KD++", ("kd", "nd")), sizes, seed, splits)
        )
        table = extract_class_means(distill_cfg, output=paths["class_means"], num_workers=0)
        teacher = FrozenTeacher(distill_cfg)
        metrics, _ = box_metrics(teacher.cfg, teacher.model)
    return {
        "metrics": metrics,
        "params": parameter_count(teacher.model)[""],
        "class_means_counts": table.counts.tolist(),
    }


def student_job(
    root: str, method: Method, seed: int, sizes: Sizes, dataset_root: Optional[str] = None
) -> dict:
    """Train the demo's student with ``method`` and ``seed``; its COCO metrics on val and the
    geometry of its RoI embeddings (:func:`embedding_geometry`)."""
    folder = run_folder(root, "detection", method, seed)
    with log_to_file(folder + ".log", console_prefix=f"[{method.name} seed {seed}] "):
        splits = register_splits(os.path.join(root, "detection"), dataset_root)
        cfg = _student_cfg(root, method, sizes, seed, splits)
        weights = train_detector(cfg, seed, log_period=1000)
        plain_cfg, model = build_plain_student(without_demo_keys(cfg), weights)
        metrics, _ = box_metrics(plain_cfg, model)
        geometry = embedding_geometry(without_demo_keys(cfg), weights, seed)
    return {"metrics": metrics, "params": parameter_count(model)[""], "geometry": geometry}


@torch.no_grad()
def embedding_geometry(cfg, weights: str, seed: int) -> dict[str, float]:
    """What ND acts on (protocol: docs/ablation.md), ``nd_det.losses.nd_mechanism`` of: on every
    val image at test scale, the RoIs the student samples as in training (its RPN proposals +
    the ground truth, 25% positive) that are labelled with a ground-truth class; the student's
    and the teacher's box-head embeddings of them, and the teacher's class mean of each label."""
    run = cfg.clone()
    run.defrost()
    run.MODEL.DISTILL.LOSSES = ["nd"]  # the teacher on the same boxes, and its class means
    run.freeze()
    model = build_model(run)
    load_student_checkpoint(model, weights)
    model.train()  # training-mode RPN and sampling; no parameter changes (no_grad, GN norms)
    means = model.distill_terms[0].class_means
    mapper = DatasetMapper(
        run,
        is_train=True,
        augmentations=[T.ResizeShortestEdge(run.INPUT.MIN_SIZE_TEST, run.INPUT.MAX_SIZE_TEST)],
    )
    torch.manual_seed(seed)
    parts = {"student": [], "teacher": [], "labels": []}
    for record in DatasetCatalog.get(run.DATASETS.TEST[0]):
        # what the training step hands its terms (the student's RoIs, the teacher on them)
        with EventStorage(0):
            inputs = model.distill_step_inputs([mapper(record)])[2]
        fg = inputs.labels < run.MODEL.ROI_HEADS.NUM_CLASSES
        parts["student"].append(inputs.student_embeddings[fg])
        parts["teacher"].append(inputs.teacher_embeddings[fg])
        parts["labels"].append(inputs.labels[fg])
    s, t, labels = (torch.cat(parts[k]) for k in ("student", "teacher", "labels"))
    return {
        **{k: float(v) for k, v in nd_mechanism(s, t, labels, means).items()},
        "rois": len(labels),
    }
