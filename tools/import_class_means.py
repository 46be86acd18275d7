#!/usr/bin/env python
"""Import a published class-means table (the paper's R101_emb.json / R50_emb.json format:
{"0": [1024 floats], ..., "80": [...]}, background last) into nd-det's class-means format.

  python tools/import_class_means.py --input R101_emb.json
  python tools/import_class_means.py --input R50_emb.json \
      --teacher-config COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml

Writes class_means/coco_<teacher config name>.pth unless --output is given.  See
docs/class_means.md.

  python tools/import_class_means.py --task classification --input center_emb_train.json \
      --teacher-model resnet50 --teacher-weights pretrained/resnet50-0676ba61.pth

imports one of the reference's classification tables (one row per class, no background) for the
configs with that teacher.  See docs/paper_rows.md.
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.class_means.import_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
