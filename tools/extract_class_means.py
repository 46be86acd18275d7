#!/usr/bin/env python
"""Extract the teacher's class means (the ND loss's class-mean table) for a distillation config.

  python tools/extract_class_means.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml
  python tools/extract_class_means.py --config-file CFG --num-gpus 8 --output means.pth
  python tools/extract_class_means.py --config-file CFG --max-images 2000   # a quick table

Writes to MODEL.DISTILL.CLASS_MEANS unless --output is given: extract once, then train.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nd_det.engine import distill_argument_parser, setup_cfg  # noqa: E402
from nd_det.engine.cli import launch_main  # noqa: E402
from nd_det.engine.preflight import preflight_distill  # noqa: E402


def main(args):
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from nd_det.class_means_extraction import extract_class_means

    setup_logger(distributed_rank=comm.get_rank())
    setup_logger(distributed_rank=comm.get_rank(), name="nd_det")
    cfg = setup_cfg(args, log=False, splits=("TRAIN",))
    extract_class_means(
        cfg,
        output=args.output,
        max_images=args.max_images,
        allow_empty_classes=args.allow_empty_classes,
    )


def precheck(args):
    """Fail fast, before any worker starts: config, datasets, teacher config and weights."""
    cfg = setup_cfg(args, log=False, splits=("TRAIN",))
    preflight_distill(cfg, need_class_means=False)


def parser():
    p = distill_argument_parser(epilog=__doc__)
    p.add_argument("--output", default=None,
                   help="where to write the table (default: MODEL.DISTILL.CLASS_MEANS)")
    p.add_argument("--max-images", type=int, default=None,
                   help="use only the first K training images (deterministic)")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="do not fail on classes without samples: zero-fill their rows and flag "
                   "them in the file's metadata (ND then pulls no direction for them)")
    return p


if __name__ == "__main__":
    launch_main(main, parser().parse_args(), precheck=precheck)
