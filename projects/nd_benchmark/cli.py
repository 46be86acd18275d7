"""Command line of ``tools/benchmark.py``: every setting is checked before anything is built."""

import argparse
import logging
import os
from types import SimpleNamespace
from typing import Optional

import torch

from nd_det.errors import ConfigError, one_line_usage_errors, run_cli
from nd_det.utils.atomic_file import atomic_write_json, atomic_write_text
from nd_det.utils.paths import check_writable
from nd_det.utils.seed import seed_argument

from .measure import PRECISIONS
from .models import MIN_IMAGE_SIDE

DEFAULT_LOSS_SETS = ("nd", "kd+nd", "dkd+nd", "reviewkd+nd")


def check_settings(s) -> None:
    """The settings argparse does not check (the loss names: :func:`.models.parse_loss_set`)."""
    if s.device not in ("cpu", "cuda") and not s.device.startswith("cuda:"):
        raise ConfigError(f"--device {s.device!r}: use cpu or cuda (cuda:N)")
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {s.device}: no CUDA device is available here; use cpu")
    for name in (
        "batch_size",
        "iters",
        "nd_rois",
        "nd_dim",
        "memory_iters",
        "dataloader_images",
        "dataloader_batches",
    ):
        if getattr(s, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(s, name)}")
    if s.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0; got {s.warmup}")
    for name, value in (("--height", s.height), ("--width", s.width)):
        if value < MIN_IMAGE_SIDE:
            raise ConfigError(f"{name} {value}: give {MIN_IMAGE_SIDE} pixels or more")
    if any(w < 0 for w in s.dataloader_workers):
        raise ConfigError(
            f"--dataloader-workers {s.dataloader_workers}: give 0 or more workers each"
        )
    if min(s.dataloader_image_size) < 1:
        raise ConfigError(
            f"--dataloader-image-size {list(s.dataloader_image_size)}: give a "
            "positive height and width"
        )


def benchmark_argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/benchmark.py",
        description="Time the distillation step against its parts (student step, teacher "
        "forward, ABF/HCL), ND vectorised vs per-RoI loop, peak memory and data-loader "
        "throughput, with random weights and synthetic data.",
        epilog="Config overrides (KEY VALUE ...) go last, after '--' when the option before "
        "them takes a list (--losses, --dataloader-workers).",
    )
    add = p.add_argument
    add("--config-file", required=True, help="a DistillRCNN config (yaml)")
    add(
        "--dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="accepted so that a training command's arguments can be reused; unused",
    )
    add("--device", default="cpu", help="cpu or cuda (cuda:N)")
    add(
        "--precision",
        default="fp32",
        choices=sorted(PRECISIONS),
        help="bf16: the student under autocast (as detectron2's AMP trainer) and the teacher under "
        "MODEL.DISTILL.TEACHER_AUTOCAST=bfloat16; losses in float32",
    )
    add("--batch-size", type=int, default=2)
    add("--height", type=int, default=320)
    add("--width", type=int, default=480)
    add("--iters", type=int, default=7, help="measured rounds (medians over them)")
    add("--warmup", type=int, default=2, help="untimed rounds first")
    add(
        "--losses",
        nargs="+",
        default=list(DEFAULT_LOSS_SETS),
        help="loss sets to time, names joined by '+' (default: %(default)s)",
    )
    add(
        "--dataloader-workers",
        nargs="*",
        type=int,
        default=[0, 2],
        help="worker counts for the data-loader check (none: skip it)",
    )
    add("--dataloader-images", type=int, default=32, help="synthetic JPEG files for the loader")
    add("--dataloader-batches", type=int, default=20, help="timed loader batches")
    add("--dataloader-image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    add("--nd-rois", type=int, default=1024)
    add("--nd-dim", type=int, default=1024)
    add("--no-memory", dest="memory", action="store_false", help="skip the peak-memory phases")
    add("--memory-iters", type=int, default=2, help="steps per memory phase")
    add("--threads", type=int, default=None, help="torch CPU threads")
    add(
        "--cudnn-benchmark",
        choices=["on", "off"],
        default=None,
        help="torch.backends.cudnn.benchmark (default: the config's CUDNN_BENCHMARK)",
    )
    add("--seed", type=seed_argument, default=0)
    add("--output", required=True, help="JSON file to write")
    add("--markdown", default=None, help="markdown summary (default: the JSON path with .md)")
    add(
        "overrides", nargs=argparse.REMAINDER, metavar="opts", help="config overrides KEY VALUE ..."
    )
    return one_line_usage_errors(p)


def _main(argv: Optional[list[str]]) -> int:
    args = benchmark_argument_parser().parse_args(argv)
    markdown = args.markdown or os.path.splitext(args.output)[0] + ".md"
    # the settings, recorded in the JSON's "settings": every option but the unused --dataset
    # and the output files
    settings = SimpleNamespace(
        **{k: v for k, v in vars(args).items() if k not in ("dataset", "output", "markdown")}
    )
    if settings.overrides[:1] == ["--"]:
        settings.overrides = settings.overrides[1:]
    if settings.cudnn_benchmark is not None:
        settings.cudnn_benchmark = settings.cudnn_benchmark == "on"
    check_settings(settings)
    check_writable(args.output, "--output")  # before minutes of timing, not after
    check_writable(markdown, "--markdown")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("nd_benchmark").setLevel(logging.INFO)
    from .run import markdown_summary, run_benchmark

    result = run_benchmark(settings)
    atomic_write_json(result, args.output)
    summary = markdown_summary(result)
    atomic_write_text(summary, markdown)
    print(summary)
    print(f"wrote {args.output} and {markdown}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """tools/benchmark.py: exit status 0, or 2 with one ERROR line for bad input."""
    return run_cli(_main, argv)
