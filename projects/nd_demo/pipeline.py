"""The embedded demo as a straight pipeline (tools/demo.py is its command line; the steps,
outputs and options: docs/demo.md): train the teacher; extract its class means; train the
student alone and distilled, side by side; export the distilled student; evaluate the three;
write results.json / results.md / results.png.  The one-process stages use every core, the two
students one thread each.
"""

import logging
import os
import shutil
import time

import torch
from detectron2.data import DatasetCatalog
from nd_common.configs import (
    DISTILL_METHODS,
    Recipe,
    describe_backbone,
    recipe_cfgs,
    recipe_fingerprint,
    without_demo_keys,
)
from nd_common.embedded import register_embedded_dataset
from nd_common.jobs import default_workers, run_jobs
from nd_common.trainer import (
    FINAL_WEIGHTS,
    METRICS_FILE,
    log_to_file,
    train_detector,
    train_detector_job,
)

from nd_det.class_means.detection import extract_class_means
from nd_det.errors import ConfigError
from nd_det.export import export_student
from nd_det.export.contract import load_exported_student
from nd_det.modeling import FrozenTeacher, build_plain_student
from nd_det.utils.paths import check_writable
from nd_det.utils.progress import format_duration

from .evaluation import score_model
from .figure import draw_demo_figure, pick_val_images, read_loss_curves, read_mechanism_curves
from .report import (
    ROW_NAMES,
    distillation_verdict,
    format_table_for_console,
    make_row,
    read_seed_spread,
    write_report,
)

logger = logging.getLogger("nd_demo")

FOLDERS = {
    "teacher": "teacher",
    "alone": "student_alone",
    "distilled": "student_distilled",
    "means": "class_means",
    "export": "distilled_student_export",
}
CLASS_MEANS_FILE = os.path.join(FOLDERS["means"], "teacher_class_means.pth")
RESULT_FILES = ("results.json", "results.md", "results.png")
_RUN_FILES = (FINAL_WEIGHTS, METRICS_FILE, "config.yaml")
# every file a run writes (relative to the output folder); the smoke test checks them all
OUTPUT_FILES = (
    ("log.txt",)
    + tuple(
        os.path.join(FOLDERS[k], f) for k in ("teacher", "alone", "distilled") for f in _RUN_FILES
    )
    + (CLASS_MEANS_FILE,)
    + tuple(os.path.join(FOLDERS["export"], f) for f in ("config.yaml", FINAL_WEIGHTS))
    + RESULT_FILES
)


def check_options(o) -> None:
    """The options argparse does not check, before anything is built or written."""
    for flag, value, least in (
        ("--threads", o.threads, 0),
        ("--workers", o.workers, 0),
        ("--log-period", o.log_period, 1),
        ("--figure-images", o.figure_images, 1),
        ("--teacher-iters", o.teacher_iters, 1),
        ("--student-iters", o.student_iters, 1),
        ("--class-means-images", o.class_means_images, 1),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{flag} {value}: give {least} or more")
    if o.device != "cpu" and not (o.device.startswith("cuda") and torch.cuda.is_available()):
        raise ConfigError(f"--device {o.device!r}: use cpu, or cuda where torch sees a GPU")
    check_writable(o.output_dir, "--output-dir", folder=True)


def run_configs(o) -> tuple[dict, object, dict]:
    """The output folders and the frozen run configs of the teacher and of the two students
    (keys "alone", "distilled") of the options ``o``; nothing is written."""
    out = os.path.abspath(o.output_dir)
    folder = {key: os.path.join(out, name) for key, name in FOLDERS.items()}
    teacher, students = recipe_cfgs(
        Recipe.from_args(o),
        o.seed,
        dict(folder, class_means=os.path.join(out, CLASS_MEANS_FILE)),
    )
    return dict(folder, out=out), teacher, students


def student_processes(workers: int) -> int:
    """Processes for the two students: ``--workers``, or 2 where 2 cores are usable (0)."""
    return min(2, default_workers(workers or 2))


def student_jobs(o, students: dict) -> dict:
    """The two student trainings as jobs of :func:`nd_common.jobs.run_jobs`."""
    return {
        key: (
            train_detector_job,
            dict(
                cfg=cfg,
                seed=o.seed,
                log_period=o.log_period,
                name=FOLDERS[key],
                log_file=os.path.join(cfg.OUTPUT_DIR, "log.txt"),
                dataset_root=o.dataset_root,
            ),
        )
        for key, cfg in students.items()
    }


def run_demo(o) -> dict:
    """Run the whole demo (``o``: tools/demo.py's parsed options); returns the report (also
    written to results.json)."""
    check_options(o)
    # the configs first: a config mistake stops the demo before it deletes anything
    folder, teacher, students = run_configs(o)
    out = folder.pop("out")
    os.makedirs(out, exist_ok=True)
    for name in list(FOLDERS.values()) + list(RESULT_FILES):  # the demo owns these
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.path.exists(path) and os.remove(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(o.threads or default_workers())
    try:
        with log_to_file(os.path.join(out, "log.txt"), app="nd_demo"):
            return _pipeline(o, out, folder, teacher, students)
    finally:
        torch.set_num_threads(threads)


def _pipeline(o, out: str, folder: dict, teacher, students: dict) -> dict:
    start = time.perf_counter()
    seconds = {}
    train_name, val_name = register_embedded_dataset(o.dataset_root)
    train_images, val_dicts = len(DatasetCatalog.get(train_name)), DatasetCatalog.get(val_name)
    losses, method_name = DISTILL_METHODS[o.method]
    processes = student_processes(o.workers)
    logger.info(
        "nd-det demo: teacher %s (%d iterations), student %s (%d iterations, alone and "
        "%s); %d train / %d val tiles; %d thread(s), the two students side by side in "
        "%d process(es); output in %s",
        describe_backbone(teacher),
        teacher.SOLVER.MAX_ITER,
        describe_backbone(students["alone"]),
        students["alone"].SOLVER.MAX_ITER,
        method_name,
        train_images,
        len(val_dicts),
        torch.get_num_threads(),
        processes,
        out,
    )

    def stage(number: int, name: str, work, summary=lambda result: ""):
        logger.info("[demo %d/6] %s ...", number, name)
        began = time.perf_counter()
        result = work()
        seconds[name] = round(time.perf_counter() - began, 1)
        logger.info(
            "[demo %d/6] %s done in %s%s",
            number,
            name,
            format_duration(seconds[name]),
            summary(result),
        )
        return result

    stage(1, "train teacher", lambda: train_detector(teacher, o.seed, o.log_period))
    distill_cfg = without_demo_keys(students["distilled"])
    means_images = min(train_images, o.class_means_images or train_images)
    stage(
        2,
        "teacher class means",
        lambda: extract_class_means(
            distill_cfg,
            output=os.path.join(out, CLASS_MEANS_FILE),
            max_images=means_images,
            num_workers=0,
        ),
        lambda t: f": {t.num_classes} x {t.dim} table from {means_images} images",
    )
    weights = stage(
        3, "train both students", lambda: dict(run_jobs(student_jobs(o, students), processes))
    )
    export = stage(
        4,
        "export distilled student",
        lambda: export_student(distill_cfg, weights["distilled"], folder["export"], overwrite=True),
        lambda e: (
            f": {e.num_tensors} tensors ({len(e.dropped_modules)} distillation-module "
            "tensors left out)"
        ),
    )

    def evaluate():
        frozen = FrozenTeacher(distill_cfg)
        return [
            score_model(frozen.cfg, frozen.model),
            score_model(
                *build_plain_student(without_demo_keys(students["alone"]), weights["alone"])
            ),
            # from the export folder alone, as a detectron2 user would load it
            score_model(*load_exported_student(export.output_dir, o.device)),
        ]

    scores = stage(
        5,
        "evaluate 3 models",
        evaluate,
        lambda s: (
            ": " + ", ".join(f"{name} AP {score['AP']:.2f}" for name, score in zip(ROW_NAMES, s))
        ),
    )
    rows = [
        make_row(name, describe_backbone(cfg), score)
        for name, cfg, score in zip(
            ROW_NAMES, (teacher, students["alone"], students["distilled"]), scores
        )
    ]
    files = {
        "json": os.path.join(out, "results.json"),
        "markdown": os.path.join(out, "results.md"),
        "figure": os.path.join(out, "results.png"),
        "export": export.output_dir,
        "log": os.path.join(out, "log.txt"),
    }
    stage(
        6,
        "write report + figure",
        lambda: draw_demo_figure(
            files["figure"],
            *(
                read_loss_curves(os.path.join(folder[k], METRICS_FILE))
                for k in ("alone", "distilled")
            ),
            rows,
            pick_val_images(val_dicts, o.figure_images),
            scores[1]["detections_file"],
            scores[2]["detections_file"],
            method_name,
            read_mechanism_curves(os.path.join(folder["distilled"], METRICS_FILE)),
        ),
    )
    report = {
        "title": "nd-det demo: distilling a tree-crown detector on the CPU",
        "dataset": {
            "train": train_name,
            "val": val_name,
            "train_images": train_images,
            "val_images": len(val_dicts),
            "val_boxes": sum(len(d.get("annotations", [])) for d in val_dicts),
        },
        "method": o.method,
        "method_name": method_name,
        "distill_losses": list(losses),
        "schedule": {
            "teacher_iters": teacher.SOLVER.MAX_ITER,
            "student_iters": students["alone"].SOLVER.MAX_ITER,
            "teacher_images_per_iter": teacher.SOLVER.IMS_PER_BATCH,
            "student_images_per_iter": students["alone"].SOLVER.IMS_PER_BATCH,
            "teacher_optimizer": f"{teacher.DEMO.OPTIMIZER} lr {teacher.SOLVER.BASE_LR:g}",
            "student_optimizer": f"{students['alone'].DEMO.OPTIMIZER} lr "
            f"{students['alone'].SOLVER.BASE_LR:g}",
            "seed": o.seed,
            "device": o.device,
            "threads": torch.get_num_threads(),
            "student_processes": processes,
        },
        "rows": rows,
        "distillation_gain": {m: rows[2][m] - rows[1][m] for m in ("AP", "AP50", "AP75")},
        "teacher_minus_student_alone_AP": rows[0]["AP"] - rows[1]["AP"],
        "wall_time_s": {"total": round(time.perf_counter() - start, 1), "stages": seconds},
        "files": {k: os.path.relpath(v, out) for k, v in files.items()},
    }
    report["settings_fingerprint"] = recipe_fingerprint(
        teacher, students, None if means_images == train_images else means_images
    )
    report["seed_spread"] = read_seed_spread(o.seed_spread, report["settings_fingerprint"])
    report["verdict"] = distillation_verdict(rows, method_name, report["seed_spread"])
    write_report(report, files["json"], files["markdown"])
    logger.info(
        "\n%s\n\ntotal wall time %s; results in %s, %s, %s; exported student in %s",
        format_table_for_console(report),
        format_duration(time.perf_counter() - start),
        files["json"],
        files["markdown"],
        files["figure"],
        export.output_dir,
    )
    return report
