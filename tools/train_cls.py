#!/usr/bin/env python
"""Train or evaluate a classifier with nd_det.classification (teacher, student, KD++/DKD++/
ReviewKD++/DIST++ student).  See docs/classification.md.

    python tools/train_cls.py --config configs/classification/quick/teacher.yaml
    torchrun --nproc_per_node 8 tools/train_cls.py --config <cfg> [--amp] [--resume]
"""
import sys

from nd_det.classification.cli import train_cli

if __name__ == "__main__":
    sys.exit(train_cli())
