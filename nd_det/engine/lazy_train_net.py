"""tools/lazy_train_net.py: train a LazyConfig distillation model (``L(DistillRCNN)(...)``), or
evaluate its student (and its teacher), with every guarantee of tools/train_net.py: the checks
before any work (one ``ERROR:`` line, exit status 2, nothing written), preemption (exit status 3,
an exact ``--resume``), ``--eval-only --eval-teacher``, detectron2's launcher, torchrun and srun
(:func:`~nd_det.engine.cli.launch_main`).  Overrides in detectron2's dotted form
(``train.max_iter=10``), each naming a key the file has."""

import os

from omegaconf import DictConfig

from ..errors import UserError
from ..modeling.teacher import TeacherSpec
from .args import distill_argument_parser
from .cli import launch_main
from .lazy_config import (
    build_on_meta,
    build_student_on_meta,
    lazy_config_text,
    lazy_key_names,
    load_run_config,
    run_view,
    teacher_node_values,
)
from .lazy_trainer import LazyDistillTrainer, evaluate_lazy_student, evaluate_lazy_teacher
from .preflight import check_eval_run, check_train_run
from .report import print_side_by_side
from .setup import register_datasets, setup_run

__all__ = ["setup_lazy", "precheck", "run", "main"]

_READ: dict = {}  # (file, overrides, eval-only) -> the LazyConfig (never changed once read)

_EPILOG = """
  tools/lazy_train_net.py --config-file configs/COCO-Distill/R50_from_R101_nd.py --num-gpus 8
  tools/lazy_train_net.py --config-file CFG --resume             # continue a stopped run
  tools/lazy_train_net.py --config-file CFG --eval-only --eval-teacher train.init_checkpoint=W
Overrides name keys of the file: train.max_iter=1000 'dataloader.train.dataset.names=[my_train]'.
Datasets by path: --dataset NAME JSON IMAGE_DIR (repeatable), then name NAME in the overrides.
"""


def setup_lazy(args, setup: bool = False) -> tuple[DictConfig, object]:
    """The run's LazyConfig and its yacs view (:func:`run_view`), the ``--dataset`` entries
    registered and the datasets checked; with ``setup`` the process's set-up runs too (loggers
    and the LazyConfig's yaml in OUTPUT_DIR, seeding)."""
    key = (os.path.abspath(args.config_file), tuple(args.opts), args.eval_only)
    if key not in _READ:  # read once per process: by the checks, then by the run
        _READ[key] = load_run_config(key[0], args.opts, "eval" if args.eval_only else "train")
    cfg = _READ[key]
    view = run_view(cfg)
    if setup:
        setup_run(view, args, config_text=lazy_config_text(cfg))
    register_datasets(args)  # checked by the pre-flight (check_train_run / check_eval_run)
    return cfg, view


def precheck(args) -> None:
    """Everything checked before any worker starts or anything is written (tools/train_net.py's
    checks on the view, the model built on the meta device)."""
    if args.eval_teacher and not args.eval_only:
        raise UserError("--eval-teacher works with --eval-only")
    with lazy_key_names():
        cfg, view = setup_lazy(args)
        if not args.eval_only:
            check_train_run(view, args, build=lambda _: build_on_meta(cfg.model))
            return
        teacher = None
        if args.eval_teacher:
            values = teacher_node_values(cfg)
            if not values:
                raise UserError(f"--eval-teacher: {args.config_file} has no model.teacher")
            values.pop("load_weights", None)
            teacher = TeacherSpec(**values)
        check_eval_run(view, args, lambda _: build_student_on_meta(cfg), teacher)


def run(args):
    """One process of the run (under detectron2's launcher, torchrun or srun)."""
    with lazy_key_names():
        cfg, view = setup_lazy(args, setup=True)
        if args.eval_only:
            student = evaluate_lazy_student(cfg, view.MODEL.WEIGHTS, view.MODEL.DEVICE)
            if args.eval_teacher:
                teacher = evaluate_lazy_teacher(cfg, view.MODEL.DEVICE)
                print_side_by_side({"student": student, "teacher": teacher})
            return student
        trainer = LazyDistillTrainer(cfg, view)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()


def lazy_argument_parser():
    return distill_argument_parser(_EPILOG)


def main(argv=None) -> None:
    launch_main(run, lazy_argument_parser().parse_args(argv), precheck=precheck)
