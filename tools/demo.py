#!/usr/bin/env python
"""The embedded demo: distil a detector on real data, offline, on the CPU, in one command.

  python tools/demo.py                         # the defaults (wall times: docs/demo_results.md)
  python tools/demo.py --method kd_nd --output-dir output/demo_kdpp
  python tools/demo.py --help

Trains a teacher, extracts its class means, trains a student alone and distilled, evaluates all
three (COCO AP on the val split), exports the distilled student and writes results.json,
results.md and results.png under --output-dir (see projects/nd_demo/pipeline.py and docs/demo.md).
"""

import os
import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
# the application lives in projects/ (outside the library, as detectron2 keeps its projects)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects"))
from nd_demo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
