"""The command line behind tools/train_cls.py (kept here so the tool stays thin and the logic is
importable and tested).

``train_main`` returns what it made and raises a ``UserError`` for a mistake; ``train_cli`` is
the tool: a mistake (a bad flag included) is one ``ERROR:`` line on stderr and exit status 2,
without a traceback.  (The teacher's class means: :mod:`nd_det.class_means.extract_cli`.)
"""

import argparse
from typing import Optional

from ..errors import ConfigError, one_line_usage_errors, run_cli
from .config import apply_overrides, load_config
from .distributed import cleanup_distributed
from .trainer import run_evaluation, run_training

__all__ = ["train_main", "train_cli"]


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_cls.py",
        description="Train a classifier (teacher, student alone, or a distilled student: KD++, "
        "DKD++, ReviewKD++, DIST++) from a yaml config. Multi-GPU / multi-node: launch with "
        "torchrun --nproc_per_node N [--nnodes M ...] tools/train_cls.py ...",
    )
    p.add_argument("--config", required=True, help="yaml config (configs/classification/...)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or (no value) from <output_dir>/"
        "last_checkpoint.pth when it exists",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate top-1/top-5 of --weights (or model.weights)",
    )
    p.add_argument("--weights", help="weights to evaluate with --eval-only")
    p.add_argument("--amp", action="store_true", help="mixed precision (sets train.amp: true)")
    p.add_argument("--output-dir", help="sets train.output_dir")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. solver.epochs=2 data.root=datasets/cifar100",
    )
    return one_line_usage_errors(p)


def train_main(argv: Optional[list[str]] = None):
    """Train (or with --eval-only evaluate); returns the TrainingResult (or the metrics)."""
    args = _train_parser().parse_args(argv)
    if args.weights and not args.eval_only:
        raise ConfigError(
            f"--weights {args.weights} is only read with --eval-only; to start "
            "training from weights set model.weights, to continue a run use "
            "--resume"
        )
    if args.eval_only and args.resume:
        raise ConfigError(
            "--resume and --eval-only together: --eval-only evaluates --weights "
            "and trains nothing; drop one of them"
        )
    cfg = apply_overrides(load_config(args.config), args.overrides)
    if args.amp:
        cfg["train"]["amp"] = True
    if args.output_dir:  # taken as given (as an override, yaml would read e.g. 2024 as a number)
        cfg["train"]["output_dir"] = args.output_dir
    try:
        if args.eval_only:
            return run_evaluation(cfg, args.weights)
        return run_training(cfg, resume=args.resume)
    finally:
        cleanup_distributed()


def _tool(main):
    def run(argv: Optional[list[str]]) -> int:
        main(argv)
        return 0

    return run


def train_cli(argv: Optional[list[str]] = None) -> int:
    """tools/train_cls.py: exit status 0, or 2 with one ``ERROR:`` line for a user mistake."""
    return run_cli(_tool(train_main), argv)
