"""Command-line arguments of tools/train_net.py: detectron2's, plus datasets by path."""

import argparse

from detectron2.engine import default_argument_parser

from ..errors import one_line_usage_errors

__all__ = ["distill_argument_parser"]

_EPILOG = """
Train on any COCO-format dataset without writing Python:
  tools/train_net.py --config-file CFG \\
      --dataset my_train path/to/train.json path/to/train_images \\
      --dataset my_val path/to/val.json path/to/val_images \\
      DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)' MODEL.ROI_HEADS.NUM_CLASSES 3

Standard COCO is found under $DETECTRON2_DATASETS/coco (default ./datasets/coco).
"""


def distill_argument_parser(epilog: str = _EPILOG) -> argparse.ArgumentParser:
    parser = one_line_usage_errors(default_argument_parser(epilog))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format dataset NAME from a JSON file and an image folder "
        "(repeatable); then name it in DATASETS.TRAIN / DATASETS.TEST",
    )
    parser.add_argument(
        "--allow-degenerate-boxes",
        action="store_true",
        help="--dataset files may hold boxes of zero width/height (logged, then dropped by "
        "detectron2, as in COCO train2017); without it they are an error",
    )
    parser.add_argument(
        "--eval-teacher",
        action="store_true",
        help="with --eval-only: also evaluate the teacher of MODEL.DISTILL on the same test sets "
        "and print teacher and student AP side by side",
    )
    return parser
