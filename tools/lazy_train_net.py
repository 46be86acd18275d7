#!/usr/bin/env python
"""Train or evaluate a distillation model written as a LazyConfig (docs/lazyconfig.md).

  python tools/lazy_train_net.py --config-file configs/COCO-Distill/R50_from_R101_nd.py --num-gpus 8
  python tools/lazy_train_net.py --config-file CFG --resume        # continue a stopped run
  python tools/lazy_train_net.py --config-file CFG --eval-only --eval-teacher \
      train.init_checkpoint=output/.../model_final.pth
  python tools/lazy_train_net.py --config-file CFG train.max_iter=1000 optimizer.lr=0.02

The guarantees of tools/train_net.py: checks before any work, preemption (exit 3) and an exact
--resume, detectron2's launcher, torchrun and srun.
"""

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.engine.lazy_train_net import main  # noqa: E402

if __name__ == "__main__":
    main()
