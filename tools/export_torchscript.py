#!/usr/bin/env python
"""Legacy: tools/export_model.py --format torchscript (torch deprecates TorchScript; prefer
--format pt2 or --format onnx).

  python tools/export_torchscript.py --export-dir deploy/MV3_from_R50_nd --image image.jpg

Writes <export-dir>/model.ts (image -> boxes, scores, classes; needs only torch + torchvision to
run) and model.ts.json (how to feed it, and the parity check).  See docs/deploy.md.
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.export.model_cli import torchscript_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(torchscript_main())
