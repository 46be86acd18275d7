#!/usr/bin/env python
"""Export the student of a distillation run for plain detectron2.

  python tools/export_student.py --weights output/R50_from_R101_nd --output deploy/R50_nd
  python tools/export_student.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml \
      --weights elsewhere/model_final.pth --output deploy/R50_nd [KEY VALUE ...]

A run folder (or a checkpoint in one) brings its own config.yaml, overrides included.
Writes <output>/config.yaml (a plain GeneralizedRCNN config, MODEL.WEIGHTS relative to its
folder) and <output>/model_final.pth (the student's weights only).  See docs/deploy.md.
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.export.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
