"""Command line of ``tools/export_student.py``: the training command's arguments (config file,
``--dataset`` entries, KEY VALUE overrides) plus where the weights come from and go."""

import argparse
from typing import Optional

from ..config import load_config
from ..engine.args import distill_argument_parser
from ..errors import UserError, run_cli
from .student import EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, export_student

__all__ = ["export_argument_parser", "main"]

_EPILOG = """
Example (the training command's arguments, plus --weights and --output):
  tools/export_student.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml \\
      --weights output/R50_from_R101_nd/model_final.pth --output deploy/R50_nd

Then, in plain detectron2 (no nd_det import):
  cfg = get_cfg(); cfg.merge_from_file("deploy/R50_nd/config.yaml")
  cfg.MODEL.WEIGHTS = "deploy/R50_nd/model_final.pth"
  predictor = DefaultPredictor(cfg)

The export runs in one process on the CPU: --num-gpus and the other launch options of the
training command are accepted and ignored; --dataset entries are accepted (no data is read).
"""


def export_argument_parser() -> argparse.ArgumentParser:
    parser = distill_argument_parser(epilog=_EPILOG)
    parser.description = (
        "Export the student of a distillation run as a plain detectron2 "
        "config and a student-only checkpoint."
    )
    parser.add_argument(
        "--weights",
        required=True,
        metavar="CHECKPOINT",
        help="training checkpoint (.pth written by the trainer), a path or a "
        "detectron2:// / https:// URL",
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


def _main(argv: Optional[list[str]]) -> int:
    args = export_argument_parser().parse_args(argv)
    if not args.config_file:
        raise UserError(
            "--config-file is required: the distillation config the student was trained with"
        )
    cfg = load_config(args.config_file, args.opts)
    result = export_student(
        cfg,
        args.weights,
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
