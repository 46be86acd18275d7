"""Command line of ``tools/benchmark.py``."""
import argparse
import dataclasses
import logging
import os
from typing import List, Optional

from nd_det.errors import one_line_usage_errors, run_cli
from nd_det.utils.atomic_file import atomic_write_json, atomic_write_text
from nd_det.utils.paths import check_writable
from nd_det.utils.seed import seed_argument
from .report import markdown_summary
from .runner import DEFAULT_LOSS_SETS, BenchmarkSettings, run_benchmark

__all__ = ["benchmark_argument_parser", "settings_from_args", "main"]


def benchmark_argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Time the distillation step against its parts (student step, teacher "
        "forward, ABF/HCL), ND vectorised vs per-RoI loop, peak memory and data-loader "
        "throughput, with random weights and synthetic data.",
        epilog="Config overrides (KEY VALUE ...) go last, after '--' when the option before "
        "them takes a list (--losses, --dataloader-workers).",
    )
    p.add_argument("--config-file", required=True, help="a DistillRCNN config (yaml)")
    p.add_argument("--dataset", nargs=3, action="append", default=[],
                   metavar=("NAME", "JSON", "IMAGE_DIR"),
                   help="accepted so that a training command's arguments can be reused; the "
                   "benchmark times synthetic batches and reads no dataset")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: student under autocast (like detectron2's AMP trainer) and the "
                   "teacher under MODEL.DISTILL.TEACHER_AUTOCAST=bfloat16; losses in float32")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--iters", type=int, default=7, help="measured rounds (medians over them)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSS_SETS),
                   help="loss sets to time, names joined by '+' (default: %(default)s)")
    p.add_argument("--dataloader-workers", nargs="*", type=int, default=[0, 2],
                   help="worker counts for the data-loader check (none: skip it)")
    p.add_argument("--dataloader-images", type=int, default=32,
                   help="synthetic JPEG files written for the data-loader check")
    p.add_argument("--dataloader-batches", type=int, default=20, help="timed loader batches")
    p.add_argument("--dataloader-image-size", type=int, nargs=2, default=[480, 640],
                   metavar=("H", "W"), help="size of the synthetic JPEG files")
    p.add_argument("--nd-rois", type=int, default=1024)
    p.add_argument("--nd-dim", type=int, default=1024)
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory phases (each runs in a fresh process)")
    p.add_argument("--memory-iters", type=int, default=2, help="steps per memory phase")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cudnn-benchmark", choices=["on", "off"], default=None,
                   help="torch.backends.cudnn.benchmark (default: the config's CUDNN_BENCHMARK)")
    p.add_argument("--cast-census", choices=["on", "off"], default=None,
                   help="count dtype casts in one distill step (default: on for bf16)")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--markdown", default=None,
                   help="markdown summary to write (default: the JSON path with .md)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return one_line_usage_errors(p)


def _switch(value: Optional[str]) -> Optional[bool]:
    return None if value is None else value == "on"


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    """Every flag named like a setting is that setting; the others are converted here."""
    opts = list(args.opts)
    if opts and opts[0] == "--":
        opts = opts[1:]
    same_name = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchmarkSettings)
                 if hasattr(args, f.name)}
    return BenchmarkSettings(**dict(
        same_name,
        overrides=opts,
        losses=list(args.losses),
        dataloader_workers=list(args.dataloader_workers),
        dataloader_image_size=tuple(args.dataloader_image_size),
        memory=not args.no_memory,
        cudnn_benchmark=_switch(args.cudnn_benchmark),
        cast_census=_switch(args.cast_census),
    ))


def _main(argv: Optional[List[str]]) -> int:
    args = benchmark_argument_parser().parse_args(argv)
    markdown = args.markdown or os.path.splitext(args.output)[0] + ".md"
    check_writable(args.output, "--output")  # before minutes of timing, not after
    check_writable(markdown, "--markdown")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("nd_det.benchmark").setLevel(logging.INFO)
    result = run_benchmark(settings_from_args(args))
    atomic_write_json(result, args.output)
    summary = markdown_summary(result)
    atomic_write_text(summary, markdown)
    print(summary)
    print(f"wrote {args.output} and {markdown}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """tools/benchmark.py: exit status 0, or 2 with one ERROR line for bad input."""
    return run_cli(_main, argv)
