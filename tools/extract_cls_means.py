#!/usr/bin/env python
"""Teacher class means for the ND loss (classification), in the file format shared with
detection.  See docs/classification.md.

    python tools/extract_cls_means.py --config <teacher config> --weights <teacher model_final.pth>
"""
import sys

from nd_det.classification.cli import extract_class_means_cli

if __name__ == "__main__":
    sys.exit(extract_class_means_cli())
