#!/usr/bin/env python
"""Benchmark the distillation step (random weights, synthetic data); see docs/benchmarks.md.

  python tools/benchmark.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml \
      --device cpu --batch-size 2 --height 320 --width 480 --precision fp32 \
      --iters 7 --warmup 2 --output benchmark.json
"""

import os
import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
# the application lives in projects/ (outside the library, as detectron2 keeps its projects)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects"))
from nd_benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
