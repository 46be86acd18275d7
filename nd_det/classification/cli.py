"""Command lines behind tools/train_cls.py and tools/extract_cls_means.py (kept here so the tools
stay thin and the logic is importable and tested).

``train_main`` / ``extract_class_means_main`` return what they made and raise a ``UserError`` for
a mistake; ``train_cli`` / ``extract_class_means_cli`` are the tools: a mistake (a bad flag
included) is one ``ERROR:`` line on stderr and exit status 2, without a traceback.
"""

import argparse
import os
import time
from typing import Optional

from torch.utils.data import DataLoader

from ..errors import ConfigError, one_line_usage_errors, run_cli
from ..losses import save_class_means
from .checkpoint import file_sha256, load_model_weights
from .class_means_extraction import extract_class_means
from .config import apply_overrides, load_config
from .data import ShardSampler, build_dataset
from .distributed import cleanup_distributed, init_distributed, stop_if_any_rank_fails
from .models import build_classifier
from .preflight import check_extraction_setup
from .teacher import class_means_metadata
from .trainer import amp_dtype_for, run_evaluation, run_training

__all__ = ["train_main", "extract_class_means_main", "train_cli", "extract_class_means_cli"]


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_cls.py",
        description="Train a classifier (teacher, student alone, or a distilled student: KD++, "
        "DKD++, ReviewKD++, DIST++) from a yaml config. Multi-GPU / multi-node: launch with "
        "torchrun --nproc_per_node N [--nnodes M ...] tools/train_cls.py ...",
    )
    p.add_argument("--config", required=True, help="yaml config (configs/classification/...)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or (no value) from <output_dir>/"
        "last_checkpoint.pth when it exists",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate top-1/top-5 of --weights (or model.weights)",
    )
    p.add_argument("--weights", help="weights to evaluate with --eval-only")
    p.add_argument("--amp", action="store_true", help="mixed precision (sets train.amp: true)")
    p.add_argument("--output-dir", help="sets train.output_dir")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. solver.epochs=2 data.root=datasets/cifar100",
    )
    return one_line_usage_errors(p)


def train_main(argv: Optional[list[str]] = None):
    """Train (or with --eval-only evaluate); returns the TrainingResult (or the metrics)."""
    args = _train_parser().parse_args(argv)
    if args.weights and not args.eval_only:
        raise ConfigError(
            f"--weights {args.weights} is only read with --eval-only; to start "
            "training from weights set model.weights, to continue a run use "
            "--resume"
        )
    if args.eval_only and args.resume:
        raise ConfigError(
            "--resume and --eval-only together: --eval-only evaluates --weights "
            "and trains nothing; drop one of them"
        )
    cfg = apply_overrides(load_config(args.config), args.overrides)
    if args.amp:
        cfg["train"]["amp"] = True
    if args.output_dir:  # taken as given (as an override, yaml would read e.g. 2024 as a number)
        cfg["train"]["output_dir"] = args.output_dir
    try:
        if args.eval_only:
            return run_evaluation(cfg, args.weights)
        return run_training(cfg, resume=args.resume)
    finally:
        cleanup_distributed()


def _extract_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extract_cls_means.py",
        description="Compute a trained teacher's class means (mean penultimate embedding per "
        "class over the training set, teacher in eval mode, no augmentation) for the ND loss.",
    )
    p.add_argument(
        "--config",
        required=True,
        help="the TEACHER's training config (gives the model and the dataset)",
    )
    p.add_argument(
        "--weights", required=True, help="the trained teacher (model_final.pth or a raw state dict)"
    )
    p.add_argument("--output", help="class-means file (default: class_means.pth next to --weights)")
    p.add_argument("--batch-size", type=int, default=256, help="per process")
    p.add_argument("--amp", action="store_true", help="autocast the teacher's forward pass")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return one_line_usage_errors(p)


def extract_class_means_main(argv: Optional[list[str]] = None):
    """Extract and save the class means; returns the table."""
    args = _extract_parser().parse_args(argv)
    cfg = apply_overrides(load_config(args.config), args.overrides)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.weights)), "class_means.pth"
    )
    check_extraction_setup(
        cfg,
        args.weights,
        output,
        args.batch_size,
        "--output" if args.output else "--output (default: class_means.pth next to --weights)",
    )
    ctx = init_distributed(cfg["train"]["device"])
    try:
        # this process's pieces; then one collective says whether every process has them
        with stop_if_any_rank_fails(ctx):
            dataset, info = build_dataset(cfg["data"], train=True, augment=False)
            model = build_classifier(
                cfg["model"]["name"], info.num_classes, info.in_channels, info.image_size
            )
            load_model_weights(model, args.weights, what="teacher", key="--weights")
        model.to(ctx.device)
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=ShardSampler(len(dataset), ctx.rank, ctx.world_size),
            num_workers=int(cfg["data"]["num_workers"]),
            pin_memory=ctx.device.type == "cuda",
        )
        metadata = class_means_metadata(
            cfg["model"]["name"],
            args.weights,
            file_sha256(args.weights),
            cfg.get("_source"),
            cfg["data"]["name"],
        )
        start = time.time()
        table = extract_class_means(
            model,
            loader,
            info.num_classes,
            ctx.device,
            metadata,
            amp_dtype_for(ctx.device, args.amp),
            info.classes,
        )
        if ctx.is_main:
            save_class_means(output, table)
            print(
                f"class means of {cfg['model']['name']} ({table.num_classes} x {table.dim}) "
                f"from {int(table.counts.sum())} training images in {time.time() - start:.1f} s "
                f"-> {output}",
                flush=True,
            )
        return table
    finally:
        cleanup_distributed()


def _tool(main):
    def run(argv: Optional[list[str]]) -> int:
        main(argv)
        return 0

    return run


def train_cli(argv: Optional[list[str]] = None) -> int:
    """tools/train_cls.py: exit status 0, or 2 with one ``ERROR:`` line for a user mistake."""
    return run_cli(_tool(train_main), argv)


def extract_class_means_cli(argv: Optional[list[str]] = None) -> int:
    """tools/extract_cls_means.py: exit status 0, or 2 with one ``ERROR:`` line."""
    return run_cli(_tool(extract_class_means_main), argv)
