#!/usr/bin/env python
"""Teacher class means for the ND loss (classification), in the file format shared with
detection.  See docs/classification.md.

    python tools/extract_cls_means.py --config <teacher config> --weights <teacher model_final.pth>
"""
from nd_det.classification.cli import extract_class_means_main

if __name__ == "__main__":
    extract_class_means_main()
