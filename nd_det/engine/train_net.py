"""tools/train_net.py: train a distilled detector, or evaluate the student (and the teacher)."""

from ..errors import UserError
from .args import distill_argument_parser
from .cli import launch_main
from .preflight import check_eval_run, check_train_run
from .report import print_side_by_side
from .setup import setup_cfg
from .trainer import DistillTrainer

__all__ = ["precheck", "run", "main"]


def precheck(args):
    """Fail fast, before any worker starts or writes anything."""
    if args.eval_teacher and not args.eval_only:
        raise UserError("--eval-teacher works with --eval-only")
    cfg = setup_cfg(args)
    if args.eval_only:
        check_eval_run(cfg, args)
    else:
        check_train_run(cfg, args)


def run(args):
    """One process of the run (under detectron2's launcher)."""
    cfg = setup_cfg(args, setup=True)
    if args.eval_only:
        results = {"student": DistillTrainer.evaluate_student(cfg, cfg.MODEL.WEIGHTS)}
        if args.eval_teacher:
            results["teacher"] = DistillTrainer.evaluate_teacher(cfg)
            print_side_by_side(results)
        return results["student"]
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv=None) -> None:
    launch_main(run, distill_argument_parser().parse_args(argv), precheck=precheck)
