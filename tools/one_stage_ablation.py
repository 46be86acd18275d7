#!/usr/bin/env python
"""RetinaNet students alone, with ReviewKD and with ReviewKD++ over seeds, on the embedded tree
crowns, with ND's mechanism (the protocol of docs/one_stage.md).

  python tools/one_stage_ablation.py --output-dir output/one_stage_ablation
  python tools/one_stage_ablation.py --quick --output-dir output/one_stage_quick
"""

import os
import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects"))
from nd_onestage.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
