#!/usr/bin/env python
"""Extract the teacher's class means (the ND loss's class-mean table) for a distillation config.

  python tools/extract_class_means.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml
  python tools/extract_class_means.py --config-file CFG --num-gpus 8 --output means.pth
  python tools/extract_class_means.py --config-file CFG --max-images 2000   # a quick table
  python tools/extract_class_means.py --config-file CFG --protocol gt-boxes --max-images all

Default protocol 'reference': the RoIs the teacher's ROI head samples from its own training-mode
RPN proposals, under training augmentation, on up to 60,000 images (the paper's code's protocol);
'gt-boxes': each ground-truth box once at test scale.  See docs/class_means.md.
Writes to MODEL.DISTILL.CLASS_MEANS unless --output is given (an existing table is replaced only
with --overwrite): extract once, then train.
"""

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.class_means.extract_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
