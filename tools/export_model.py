#!/usr/bin/env python
"""Export a student (tools/export_student.py's folder) as deploy files, checked on an image.

  python tools/export_model.py --export-dir deploy/R50_nd --format pt2 onnx --image image.jpg
  python tools/export_model.py --export-dir deploy/R50_nd --format torchscript --image image.jpg

Writes <export-dir>/model.pt2 (torch.export), model.onnx (ONNX Runtime) and/or model.ts
(TorchScript, legacy), each with a .json record beside it (input contract, parity check).  See
docs/deploy.md.
"""

import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.export.model_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
