"""The detection half of the ablation: one teacher with its class means, then one student run
per (method, seed), all on the ablation split of the embedded tree-crown data, with the demo's
models, trainer and evaluation (``nd_det.demo``).  Each function is a job for
:func:`nd_det.utils.parallel.run_jobs`: it runs in a process of its own and returns a dict."""
import logging
import os
from typing import Dict, List, Optional

from fvcore.nn import parameter_count

from nd_det.class_means_extraction import extract_class_means
from nd_demo.configs import (DEFAULT_STUDENT_CONFIG, DEFAULT_TEACHER_CONFIG, student_cfg,
                            teacher_cfg, without_demo_keys)
from nd_demo.evaluation import box_metrics
from nd_demo.trainer import train_detector
from nd_demo.progress import DemoClock, Stage
from nd_demo.run_log import log_to_file
from nd_det.modeling import FrozenTeacher, build_plain_student
from .plan import Method, Sizes, run_folder, teacher_paths
from .splits import register_splits

__all__ = ["teacher_job", "student_job", "input_opts"]


def input_opts(sizes: Sizes) -> List[str]:
    """KEY VALUE overrides of the input size (the quick run's small images)."""
    if not sizes.det_input_size:
        return []
    s = str(sizes.det_input_size)
    return ["INPUT.MIN_SIZE_TRAIN", f"({s},)", "INPUT.MAX_SIZE_TRAIN", s,
            "INPUT.MIN_SIZE_TEST", s, "INPUT.MAX_SIZE_TEST", s]


def _quiet_clock(stage: str, iters: int) -> DemoClock:
    return DemoClock([Stage(stage, iters, 1.0)],
                     emit=lambda line: logging.getLogger("nd_det.ablation").info(line.strip()))


def teacher_job(root: str, sizes: Sizes, seed: int = 0, dataset_root: Optional[str] = None) -> Dict:
    """Train the teacher, extract its class means (the default, reference protocol, every
    training image), evaluate it; returns its metrics."""
    paths = teacher_paths(root, "detection")
    os.makedirs(paths["folder"], exist_ok=True)
    with log_to_file(os.path.join(paths["folder"], "log.txt")):
        splits = register_splits(os.path.join(root, "detection"), dataset_root)
        cfg = teacher_cfg(DEFAULT_TEACHER_CONFIG, paths["folder"], sizes.teacher_iters, seed, "cpu",
                          input_opts(sizes), splits)
        train_detector(cfg, _quiet_clock("teacher", sizes.teacher_iters), "teacher", seed, 10)
        # any distillation config with this teacher names it for the extraction
        distill_cfg = without_demo_keys(_student_cfg(root, Method("KD++", ("kd", "nd")), sizes,
                                                     seed, splits))
        table = extract_class_means(distill_cfg, output=paths["class_means"], num_workers=0)
        teacher = FrozenTeacher(distill_cfg)
        result = _scored(teacher.cfg, teacher.model)
    return dict(result, class_means_counts=table.counts.tolist())


def _student_cfg(root, method: Method, sizes: Sizes, seed: int, splits):
    paths = teacher_paths(root, "detection")
    return student_cfg(DEFAULT_STUDENT_CONFIG, run_folder(root, "detection", method, seed),
                       sizes.student_iters, seed, "cpu", list(method.losses), paths["config"],
                       paths["weights"], paths["class_means"],
                       input_opts(sizes) + list(method.overrides), splits)


def student_job(root: str, method: Method, seed: int, sizes: Sizes,
                dataset_root: Optional[str] = None) -> Dict:
    """Train the demo's student with ``method`` and ``seed``; its COCO metrics on val."""
    with log_to_file(run_folder(root, "detection", method, seed) + ".log"):
        splits = register_splits(os.path.join(root, "detection"), dataset_root)
        cfg = _student_cfg(root, method, sizes, seed, splits)
        weights = train_detector(cfg, _quiet_clock(method.name, sizes.student_iters),
                                 method.name, seed, 10)
        return _scored(*build_plain_student(without_demo_keys(cfg), weights))


def _scored(cfg, model) -> Dict:
    # the demo's metrics without its inference timing pass (the ablation reports no speed)
    metrics, _ = box_metrics(cfg, model)
    return {"metrics": metrics, "params": parameter_count(model)[""]}
