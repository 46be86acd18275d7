"""The embedded demo, step by step, in one process (tools/demo.py is its command line).

1. train the teacher (``configs/Demo/teacher_*.yaml``) on the embedded tree-crown data;
2. extract its class means with the real tool code (:func:`extract_class_means`);
3. train the student twice, same seed and schedule: alone (``MODEL.DISTILL.LOSSES []``), then
   distilled from the teacher (``--method``, ReviewKD++ by default);
4. export the distilled student (plain detectron2 config + student-only weights);
5. evaluate the teacher, the student alone and the exported distilled student: COCO box AP on
   the val split, parameters, inference ms/image;
6. write ``results.json`` / ``results.md`` / ``results.png`` and print the table.

Everything lands in ``--output-dir``::

    log.txt                        the detailed log (detectron2's, pycocotools' output)
    teacher/                       model_final.pth, metrics.json, config.yaml, inference/
    class_means/                   teacher_class_means.pth
    student_alone/                 model_final.pth, metrics.json, config.yaml, inference/
    student_distilled/             the same, for the distilled student
    distilled_student_export/      config.yaml + model_final.pth (tools/export_student.py format)
    results.json results.md results.png

The demo owns those folders: it empties them at the start of a run.  The two students train side
by side, one process of ``--threads`` threads each (``--workers``); each writes its own log.txt.
"""
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog

from nd_det.class_means_extraction import extract_class_means
from nd_demo.embedded import register_embedded_dataset
from nd_det.errors import ConfigError
from nd_det.export import export_student
from nd_det.export.torchscript import load_exported_student
from nd_det.modeling import FrozenTeacher, build_plain_student
from nd_det.utils.paths import check_writable
from nd_demo.jobs import default_workers, run_jobs
from nd_det.utils.progress import format_duration
from .configs import (DEFAULT_METHOD, DEFAULT_STUDENT_CONFIG, DEFAULT_TEACHER_CONFIG, DISTILL_METHODS, METHOD_NAMES, describe_backbone, student_cfg, teacher_cfg, without_demo_keys)
from .evaluation import score_model
from .figure import draw_demo_figure, pick_val_images, read_loss_curves
from .progress import UNIT_PRICES, DemoClock, Stage
from .report import ROW_NAMES, format_table_for_console, make_row, distillation_verdict
from .report import write_report
from .run_log import log_to_file
from .trainer import FINAL_WEIGHTS, METRICS_FILE, train_detector, train_detector_job

__all__ = ["DemoOptions", "DemoResult", "run_demo", "OUTPUT_FILES"]

TEACHER_DIR = "teacher"
CLASS_MEANS_FILE = os.path.join("class_means", "teacher_class_means.pth")
ALONE_DIR = "student_alone"
DISTILLED_DIR = "student_distilled"
EXPORT_DIR = "distilled_student_export"
_RESULT_FILES = ("results.json", "results.md", "results.png")
_RUN_FILES = (FINAL_WEIGHTS, METRICS_FILE, "config.yaml")  # in each training folder


def _run_files(folder: str) -> Tuple[str, ...]:
    return tuple(os.path.join(folder, name) for name in _RUN_FILES)


# every file a run writes (relative to the output folder); the smoke test checks them all
OUTPUT_FILES = (("log.txt",) + _run_files(TEACHER_DIR) + (CLASS_MEANS_FILE,)
                + _run_files(ALONE_DIR) + _run_files(DISTILLED_DIR)
                + (os.path.join(EXPORT_DIR, "config.yaml"), os.path.join(EXPORT_DIR, FINAL_WEIGHTS))
                + _RESULT_FILES)
_STAGES = ("train teacher", "teacher class means", "train student alone",
           "train distilled student", "export distilled student", "evaluate 3 models",
           "write report + figure")


@dataclass
class DemoOptions:
    """What tools/demo.py's options set (None: the config file's value)."""

    output_dir: str = os.path.join("output", "demo")
    teacher_config: str = DEFAULT_TEACHER_CONFIG
    student_config: str = DEFAULT_STUDENT_CONFIG
    method: str = DEFAULT_METHOD
    teacher_iters: Optional[int] = None
    student_iters: Optional[int] = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    workers: int = 0  # processes for the two student runs (0: min(2, usable cores))
    log_period: int = 10
    class_means_images: Optional[int] = None
    figure_images: int = 3
    opts: List[str] = field(default_factory=list)  # KEY VALUE, for teacher and student configs
    dataset_root: Optional[str] = None  # the embedded dataset's folder (default: its cache)


@dataclass
class DemoResult:
    report: Dict
    files: Dict[str, str]


def _check_options(options: DemoOptions) -> None:
    if options.method not in DISTILL_METHODS:
        raise ConfigError(f"--method {options.method!r}: choose one of "
                              f"{sorted(DISTILL_METHODS)}")
    if options.threads < 1:
        raise ConfigError(f"--threads {options.threads}: give 1 or more")
    if options.workers < 0:
        raise ConfigError(f"--workers {options.workers}: give 1 or more (0: every core)")
    if options.log_period < 1:
        raise ConfigError(f"--log-period {options.log_period}: give 1 or more")
    if options.figure_images < 1:
        raise ConfigError(f"--figure-images {options.figure_images}: give 1 or more")
    if len(options.opts) % 2:
        raise ConfigError(f"config overrides must be KEY VALUE pairs; got {options.opts}")
    for what, value in (("--teacher-iters", options.teacher_iters),
                        ("--student-iters", options.student_iters),
                        ("--class-means-images", options.class_means_images)):
        if value is not None and value < 1:
            raise ConfigError(f"{what} {value}: give 1 or more")
    if options.device != "cpu" and not options.device.startswith("cuda"):
        raise ConfigError(f"--device {options.device!r}: use cpu or cuda")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {options.device}: torch sees no CUDA device here; "
                              "use --device cpu")
    check_writable(options.output_dir, "--output-dir", folder=True)


def _fresh_folders(root: str) -> None:
    for name in (TEACHER_DIR, os.path.dirname(CLASS_MEANS_FILE), ALONE_DIR, DISTILLED_DIR,
                 EXPORT_DIR):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
    for name in _RESULT_FILES:
        path = os.path.join(root, name)
        if os.path.exists(path):
            os.remove(path)


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the whole demo (see the module docstring), its progress lines on stdout."""
    _check_options(options)
    options.workers = default_workers(options.workers or 2)
    out = os.path.abspath(options.output_dir)
    os.makedirs(out, exist_ok=True)
    _fresh_folders(out)
    previous_threads = torch.get_num_threads()
    previous_deterministic = (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(options.threads)
    try:
        with log_to_file(os.path.join(out, "log.txt")):
            return _run(options, out)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic[0],
                                           warn_only=previous_deterministic[1])


def _run(options: DemoOptions, out: str) -> DemoResult:
    train_name, val_name = register_embedded_dataset(options.dataset_root)
    train_images = len(DatasetCatalog.get(train_name))
    val_dicts = DatasetCatalog.get(val_name)
    losses = DISTILL_METHODS[options.method]
    method_name = METHOD_NAMES[options.method]

    # ---- configs (all checked before anything runs; no --*-iters: the config's MAX_ITER)
    cfg_teacher = teacher_cfg(options.teacher_config, os.path.join(out, TEACHER_DIR),
                              options.teacher_iters, options.seed, options.device, options.opts)
    teacher_config_file = os.path.join(out, TEACHER_DIR, "config.yaml")
    teacher_weights = os.path.join(out, TEACHER_DIR, FINAL_WEIGHTS)
    class_means = os.path.join(out, CLASS_MEANS_FILE)

    def make_student(folder: str, student_losses: List[str]) -> CfgNode:
        return student_cfg(options.student_config, os.path.join(out, folder),
                           options.student_iters, options.seed, options.device, student_losses,
                           teacher_config_file, teacher_weights, class_means, options.opts)

    cfg_alone = make_student(ALONE_DIR, [])
    cfg_distilled = make_student(DISTILLED_DIR, losses)
    t_iters, s_iters = cfg_teacher.SOLVER.MAX_ITER, cfg_alone.SOLVER.MAX_ITER
    means_images = min(train_images, options.class_means_images or train_images)

    batch_t, batch_s = cfg_teacher.SOLVER.IMS_PER_BATCH, cfg_alone.SOLVER.IMS_PER_BATCH
    clock = DemoClock([
        Stage(_STAGES[0], t_iters, batch_t * UNIT_PRICES["teacher_image"]),
        Stage(_STAGES[1], means_images, UNIT_PRICES["inference_image"]),
        Stage(_STAGES[2], s_iters, batch_s * UNIT_PRICES["student_image"]),
        Stage(_STAGES[3], s_iters, batch_s * UNIT_PRICES["distilled_image"]),
        Stage(_STAGES[4], 1, UNIT_PRICES["fixed"]),
        Stage(_STAGES[5], 3, 2 * len(val_dicts) * UNIT_PRICES["inference_image"]),
        Stage(_STAGES[6], 1, UNIT_PRICES["fixed"]),
    ])
    clock.emit(f"nd-det demo: teacher {describe_backbone(cfg_teacher)} ({t_iters} iterations), "
               f"student {describe_backbone(cfg_alone)} ({s_iters} iterations, alone and "
               f"{method_name}); {train_images} train / {len(val_dicts)} val tiles; "
               f"{options.threads} thread(s), the two students side by side in "
               f"{min(2, options.workers)} process(es); output in {out}")

    # ---- 1. teacher
    train_detector(cfg_teacher, clock, _STAGES[0], options.seed, options.log_period)

    # ---- 2. class means of the teacher (the real extraction code)
    clock.start(_STAGES[1])
    table = extract_class_means(without_demo_keys(cfg_distilled), output=class_means,
                                max_images=means_images, num_workers=0)
    clock.finish(_STAGES[1], f"{table.num_classes} x {table.dim} table from {means_images} "
                             f"images, samples per row {table.counts.tolist()}")

    # ---- 3. the student twice, side by side (one process of one thread each)
    tail = sum(stage.units for stage in clock.stages[4:])
    jobs = {}
    for stage, cfg in ((_STAGES[2], cfg_alone), (_STAGES[3], cfg_distilled)):
        clock.start(stage)
        jobs[stage] = (train_detector_job, dict(
            cfg=cfg, stage=stage, seed=options.seed, log_period=options.log_period,
            log_file=os.path.join(cfg.OUTPUT_DIR, "log.txt"),
            units_per_iter=clock.stage(stage).units_per_step, tail_units=tail,
            dataset_root=options.dataset_root))
    weights = {}
    for stage, path in run_jobs(jobs, min(len(jobs), options.workers)):
        weights[stage] = path
        clock.finish(stage, f"{s_iters} iterations (log: "
                            f"{os.path.relpath(os.path.join(os.path.dirname(path), 'log.txt'), out)})")
    alone_weights, distilled_weights = weights[_STAGES[2]], weights[_STAGES[3]]

    # ---- 4. export the distilled student
    clock.start(_STAGES[4])
    export = export_student(without_demo_keys(cfg_distilled), distilled_weights,
                            os.path.join(out, EXPORT_DIR), overwrite=True)
    clock.finish(_STAGES[4], f"{export.output_dir} ({export.num_tensors} tensors; left out "
                             f"{len(export.dropped_modules)} distillation-module tensors)")

    # ---- 5. evaluate
    clock.start(_STAGES[5])
    teacher = FrozenTeacher(without_demo_keys(cfg_distilled))
    scores = {"teacher": score_model(teacher.cfg, teacher.model)}
    clock.advance(_STAGES[5], 1)
    plain_alone, alone = build_plain_student(without_demo_keys(cfg_alone), alone_weights)
    scores["student alone"] = score_model(plain_alone, alone)
    clock.advance(_STAGES[5], 2)
    # built from the export folder alone, as a detectron2 user would (its config keeps the
    # distilled run's OUTPUT_DIR: the evaluation writes there)
    exported_cfg, exported_model = load_exported_student(export.output_dir, options.device)
    scores["distilled student"] = score_model(exported_cfg, exported_model)
    clock.finish(_STAGES[5], ", ".join(f"{name} AP {s.AP:.2f}" for name, s in scores.items()))

    # ---- 6. report
    clock.start(_STAGES[6])
    rows = [make_row(name, describe_backbone(cfg), scores[name])
            for name, cfg in zip(ROW_NAMES, (cfg_teacher, cfg_alone, cfg_distilled))]
    files = {
        "json": os.path.join(out, "results.json"),
        "markdown": os.path.join(out, "results.md"),
        "figure": os.path.join(out, "results.png"),
        "export": export.output_dir,
        "log": os.path.join(out, "log.txt"),
    }
    draw_demo_figure(
        files["figure"],
        read_loss_curves(os.path.join(cfg_alone.OUTPUT_DIR, METRICS_FILE)),
        read_loss_curves(os.path.join(cfg_distilled.OUTPUT_DIR, METRICS_FILE)),
        rows, pick_val_images(val_dicts, options.figure_images),
        scores["student alone"].detections_file, scores["distilled student"].detections_file,
        method_name,
    )
    clock.finish(_STAGES[6])
    report = {
        "title": "nd-det demo: distilling a tree-crown detector on the CPU",
        "dataset": {"train": train_name, "val": val_name, "train_images": train_images,
                    "val_images": len(val_dicts),
                    "val_boxes": sum(len(d.get("annotations", [])) for d in val_dicts)},
        "method": options.method,
        "method_name": method_name,
        "distill_losses": list(losses),
        "schedule": {"teacher_iters": t_iters, "student_iters": s_iters,
                     "teacher_images_per_iter": batch_t, "student_images_per_iter": batch_s,
                     "teacher_optimizer": f"{cfg_teacher.DEMO.OPTIMIZER} lr "
                                          f"{cfg_teacher.SOLVER.BASE_LR:g}",
                     "student_optimizer": f"{cfg_alone.DEMO.OPTIMIZER} lr "
                                          f"{cfg_alone.SOLVER.BASE_LR:g}",
                     "seed": options.seed,
                     "device": options.device, "threads": options.threads,
                     "student_processes": min(2, options.workers)},
        "rows": rows,
        "distillation_gain": {m: round(rows[2][m] - rows[1][m], 3) for m in ("AP", "AP50", "AP75")},
        "teacher_minus_student_alone_AP": round(rows[0]["AP"] - rows[1]["AP"], 3),
        "verdict": distillation_verdict(rows, method_name),
        "wall_time_s": {"total": round(clock.elapsed(), 1), "stages": clock.stage_seconds()},
        "files": {k: os.path.relpath(v, out) for k, v in files.items()},
    }
    write_report(report, files["json"], files["markdown"])
    clock.emit("")
    clock.emit(format_table_for_console(report))
    clock.emit("")
    clock.emit(f"total wall time {format_duration(clock.elapsed())}; results in "
               f"{files['json']}, {files['markdown']}, {files['figure']}; exported student in "
               f"{export.output_dir}")
    return DemoResult(report=report, files=files)
