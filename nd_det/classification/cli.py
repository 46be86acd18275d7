"""The command lines of the classification package, in detectron2's grammar (its
``default_argument_parser``): ``--config-file FILE`` and flags, then ``KEY VALUE`` overrides.

``train_main`` returns what it made and raises a ``UserError`` for a mistake; ``train_cli`` is
``tools/train_cls.py``: a mistake (a bad flag included) is one ``ERROR:`` line on stderr and
exit status 2, without a traceback; a preempted run ends with exit status 3.  (The teacher's
class means: :mod:`nd_det.class_means.classification`.)
"""

import argparse
from typing import Optional

from ..errors import ConfigError, one_line_usage_errors, run_cli
from .config import load_config
from .distributed import cleanup_distributed
from .trainer import run_evaluation, run_training

__all__ = ["argument_parser", "parse_config", "train_main", "train_cli"]


def argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """``--config-file`` and ``KEY VALUE ...`` overrides (``opts``), as detectron2's tools."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config-file", required=True, metavar="FILE", help="yaml config")
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. solver.epochs 2 train.output_dir output/run",
    )
    return one_line_usage_errors(p)


def parse_config(args: argparse.Namespace):
    """The config of ``args.config_file`` with ``args.opts`` merged in."""
    misplaced = [o for o in args.opts[::2] if o.startswith("--")]
    if misplaced:
        raise ConfigError(f"{misplaced[0]} comes after the KEY VALUE overrides: put flags first")
    return load_config(args.config_file, args.opts)


def train_main(argv: Optional[list[str]] = None):
    """Train (or with --eval-only evaluate); returns the TrainingResult (or the metrics)."""
    p = argument_parser(
        "train_cls.py",
        "Train a classifier (teacher, student alone, or a distilled student: KD++, DKD++, "
        "ReviewKD++, DIST++). Multi-GPU / multi-node: torchrun --nproc_per_node N "
        "tools/train_cls.py ...",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint of train.output_dir (if there is one)",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate model.weights (with --resume: the last checkpoint) on the test split",
    )
    args = p.parse_args(argv)
    cfg = parse_config(args)
    try:
        if args.eval_only:
            return run_evaluation(cfg, resume=args.resume)
        return run_training(cfg, resume=args.resume)
    finally:
        cleanup_distributed()


def train_cli(argv: Optional[list[str]] = None) -> int:
    """tools/train_cls.py: exit status 0, 2 with one ``ERROR:`` line for a user mistake, 3
    when preempted."""

    def main(args):
        train_main(args)

    return run_cli(main, argv)
