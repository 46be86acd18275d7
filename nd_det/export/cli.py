"""Command line of ``tools/export_student.py``: a run folder (or a checkpoint and the training
command's arguments: config file, ``--dataset`` entries, KEY VALUE overrides) in, an export
folder out."""

import argparse
import os
from typing import Optional

from ..config import is_lazy_run_config, load_config
from ..engine.args import distill_argument_parser
from ..engine.checkpoint import resume_checkpoint
from ..engine.lazy_config import load_run_config
from ..engine.lazy_export import export_lazy_student
from ..engine.setup import RUN_CONFIG_NAME
from ..errors import ConfigError, run_cli
from .student import EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, export_student

__all__ = ["export_argument_parser", "main"]

_EPILOG = """
Examples: the run folder (its config.yaml, overrides included, and its last checkpoint), or a
checkpoint with the training command's config and overrides:
  tools/export_student.py --weights output/R50_from_R101_nd --output deploy/R50_nd
  tools/export_student.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml \\
      --weights output/R50_from_R101_nd/model_final.pth --output deploy/R50_nd [KEY VALUE ...]

Then, in plain detectron2 (no nd_det import):
  cfg = get_cfg(); cfg.merge_from_file("deploy/R50_nd/config.yaml")
  cfg.MODEL.WEIGHTS = "deploy/R50_nd/model_final.pth"
  predictor = DefaultPredictor(cfg)

The export runs in one process on the CPU: --num-gpus and the other launch options of the
training command are accepted and ignored; --dataset entries are accepted (no data is read).
"""


def export_argument_parser() -> argparse.ArgumentParser:
    parser = distill_argument_parser(epilog=_EPILOG, require_config=False)
    parser.description = (
        "Export the student of a distillation run as a plain detectron2 "
        "config and a student-only checkpoint."
    )
    parser.add_argument(
        "--weights",
        required=True,
        metavar="RUN_OR_CHECKPOINT",
        help="the run's OUTPUT_DIR (its last checkpoint), or a training checkpoint (.pth written "
        "by the trainer: a path or a detectron2:// / https:// URL); without --config-file, the "
        f"{RUN_CONFIG_NAME} the run wrote next to it is the config",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help=f"folder to write {EXPORT_CONFIG_NAME} and {EXPORT_WEIGHTS_NAME} "
        "into (must be new or empty)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a previous export in --output"
    )
    parser.add_argument(
        "--allow-non-distilled-weights",
        action="store_true",
        help="export --weights even when they are the teacher's checkpoint or "
        "lack the distillation modules this config trains",
    )
    return parser


def run_files(weights: str, config_file: str) -> tuple[str, str]:
    """(checkpoint, config file) of ``--weights`` and ``--config-file``: a run folder gives its
    last intact checkpoint; the config defaults to the run's own record next to the checkpoint
    (every override of the training command included)."""
    if os.path.isdir(weights):
        weights = resume_checkpoint(weights) or weights
    run_config = os.path.join(os.path.dirname(weights), RUN_CONFIG_NAME)
    if config_file:
        return weights, config_file
    if not os.path.isfile(run_config):
        raise ConfigError(
            f"--config-file is required: no {RUN_CONFIG_NAME} of a run next to {weights}"
        )
    print(f"Config: {run_config} (the run's own)")
    return weights, run_config


def _main(argv: Optional[list[str]]) -> int:
    args = export_argument_parser().parse_args(argv)
    weights, config_file = run_files(args.weights, args.config_file)
    if os.path.isfile(config_file) and is_lazy_run_config(config_file):  # a LazyConfig run
        lazy = load_run_config(config_file, args.opts, "eval")
        result = export_lazy_student(lazy, weights, args.output, overwrite=args.overwrite)
    else:
        result = export_student(
            load_config(config_file, args.opts),
            weights,
            args.output,
            overwrite=args.overwrite,
            allow_non_distilled=args.allow_non_distilled_weights,
        )
    print(
        f"Exported the student to {result.output_dir}: {EXPORT_CONFIG_NAME}, "
        f"{EXPORT_WEIGHTS_NAME} ({result.num_tensors} tensors)"
    )
    if result.dropped_modules or result.dropped_entries:
        print(
            f"Left out: {len(result.dropped_modules)} distillation-module tensors "
            f"(distill_terms.*), training state {result.dropped_entries}"
        )
    for note in result.notes:
        print(f"NOTE: {note}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """tools/export_student.py: returns the exit status (2 for a user error, one line)."""
    return run_cli(_main, argv)
