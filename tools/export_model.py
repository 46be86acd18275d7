#!/usr/bin/env python
"""Export a student (tools/export_student.py's folder) as one deploy file, checked on an image.

  python tools/export_model.py --export-dir deploy/R50_nd --format pt2 --image image.jpg
  python tools/export_model.py --export-dir deploy/R50_nd --format onnx --image image.jpg

Writes <export-dir>/model.pt2 (torch.export), model.onnx (ONNX Runtime) or model.ts
(TorchScript, legacy) and a .json record beside it (input contract, parity check).  See
docs/deploy.md.
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.export.model_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
