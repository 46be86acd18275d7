#!/usr/bin/env python
"""Teacher class means for the ND loss (classification), in the file format shared with
detection.  See docs/classification.md.

    python tools/extract_cls_means.py --config <teacher config> --weights <teacher model_final.pth>
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before torch is imported
from nd_det.classification.cli import extract_class_means_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(extract_class_means_cli())
