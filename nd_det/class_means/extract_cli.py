"""tools/extract_class_means.py: the teacher's class-mean table, of a detection distillation
config (``--task detection``, the default: :mod:`.detection_cli`) or of a trained
classification teacher (``--task classification``: :mod:`.classification`).  Nothing of
detectron2 is imported for ``--task classification``."""

import argparse
import sys
from typing import Optional

from ..errors import run_cli

__all__ = ["TASKS", "main"]

TASKS = ("detection", "classification")


def _classification(argv: Optional[list[str]]) -> int:
    from .classification import extract_classification_main

    extract_classification_main(argv)
    return 0


def main(argv: Optional[list[str]] = None) -> None:
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", choices=TASKS, default="detection")
    known, rest = task.parse_known_args(argv)
    if known.task == "classification":
        sys.exit(run_cli(_classification, rest))
    from .detection_cli import main as detection_main

    detection_main(argv)
