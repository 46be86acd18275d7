#!/usr/bin/env python
"""Train or evaluate a classifier with nd_det.classification (teacher, student, KD++/DKD++/
ReviewKD++/DIST++ student).  See docs/classification.md.

    python tools/train_cls.py --config configs/classification/quick/teacher.yaml
    torchrun --nproc_per_node 8 tools/train_cls.py --config <cfg> [--amp] [--resume]
"""
from nd_det.classification.cli import train_main

if __name__ == "__main__":
    train_main()
