#!/usr/bin/env python
"""Train or evaluate a distilled detector (detectron2 trainer, COCO evaluation).

  python tools/train_net.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml --num-gpus 8
  python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/.../model_final.pth
  python tools/train_net.py --config-file CFG --eval-only --eval-teacher MODEL.WEIGHTS ...
  python tools/train_net.py --config-file CFG --resume          # continue a killed run

Multi-machine: --num-machines M --machine-rank R --dist-url tcp://HOST:PORT (detectron2 launch).
"""

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.engine.train_net import main  # noqa: E402

if __name__ == "__main__":
    main()
