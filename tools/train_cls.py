#!/usr/bin/env python
"""Train or evaluate a classifier with nd_det.classification (teacher, student, KD++/DKD++/
ReviewKD++/DIST++ student), in detectron2's grammar.  See docs/classification.md.

    python tools/train_cls.py --config-file configs/classification/quick/teacher.yaml
    python tools/train_cls.py --config-file CFG --eval-only model.weights RUN/model_final.pth
    torchrun --nproc_per_node 8 tools/train_cls.py --config-file CFG [--resume] [KEY VALUE ...]
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before torch is imported
from nd_det.classification.cli import train_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_cli())
