#!/usr/bin/env python
"""What ND adds to each distillation method (X vs X++), over several seeds, offline.

  python tools/ablation.py                    # the default protocol (docs/ablation.md)
  python tools/ablation.py --quick            # the whole pipeline at toy size

Writes results.json, results.md and results.png under --output-dir; see docs/ablation.md.
"""

import os
import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
# the application lives in projects/ (outside the library, as detectron2 keeps its projects)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects"))
from nd_ablation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
