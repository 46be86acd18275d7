#!/usr/bin/env python
"""Train or evaluate a distilled detector (detectron2 trainer, COCO evaluation).

  python tools/train_net.py --config-file configs/COCO-Distill/R50_from_R101_nd.yaml --num-gpus 8
  python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/.../model_final.pth
  python tools/train_net.py --config-file CFG --eval-only --eval-teacher MODEL.WEIGHTS ...
  python tools/train_net.py --config-file CFG --resume          # continue a killed run

Multi-machine: --num-machines M --machine-rank R --dist-url tcp://HOST:PORT (detectron2 launch).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nd_det.engine import DistillTrainer, distill_argument_parser, setup_cfg  # noqa: E402
from nd_det.engine.cli import launch_main  # noqa: E402
from nd_det.engine.preflight import preflight_distill  # noqa: E402
from nd_det.engine.report import print_side_by_side  # noqa: E402


def precheck(args):
    """Fail fast, before any worker starts or writes anything."""
    cfg = setup_cfg(args, log=False)
    if not args.eval_only or args.eval_teacher:
        preflight_distill(cfg, need_class_means=not args.eval_only)


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        results = {"student": DistillTrainer.evaluate_student(cfg, cfg.MODEL.WEIGHTS)}
        if args.eval_teacher:
            results["teacher"] = DistillTrainer.evaluate_teacher(cfg)
            print_side_by_side(results)
        return results["student"]
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = distill_argument_parser().parse_args()
    if args.eval_teacher and not args.eval_only:
        sys.exit("--eval-teacher works with --eval-only")
    launch_main(main, args, precheck=precheck)
