"""Command line of the embedded demo (``python tools/demo.py``)."""

import argparse
import os
from typing import Optional

from nd_common.configs import add_recipe_arguments

from nd_det.errors import one_line_usage_errors, run_cli
from nd_det.utils.seed import seed_argument

DEFAULT_SEED_SPREAD = os.path.normpath(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "demo_seed_spread.json"
    )
)
_EPILOG = """
Examples:
  python tools/demo.py                                  # the defaults (see README.md)
  python tools/demo.py --method kd_nd --output-dir output/demo_kdpp
  python tools/demo.py --teacher-iters 300 --student-iters 300
  python tools/demo.py --student-config my_student.yaml MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 128

Trailing KEY VALUE pairs override both the teacher's and the students' config.
"""


def demo_argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/demo.py",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Offline demo of nd-det on the embedded tree-crown data: train a teacher, "
        "extract its class means, train a student alone and distilled (same seed and schedule), "
        "evaluate all three with COCO AP, export the distilled student, and write a results "
        "table (JSON + Markdown) and a figure.",
    )
    add = p.add_argument
    add(
        "--output-dir",
        default="output/demo",
        metavar="DIR",
        help="where everything is written (default: %(default)s)",
    )
    add_recipe_arguments(p)
    add("--seed", type=seed_argument, default=0, help="seed of everything (default: 0)")
    add("--device", default="cpu", help="cpu (default) or cuda")
    add(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="torch CPU threads of the one-process stages (default 0: every core; the two "
        "students side by side use one each)",
    )
    add(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="processes for the two student runs (default 0: 2 where the machine has 2 cores; "
        "1 runs them one after the other, with the same numbers)",
    )
    add(
        "--log-period",
        type=int,
        default=10,
        metavar="N",
        help="a progress line (and a metrics.json record) every N iterations",
    )
    add(
        "--class-means-images",
        type=int,
        default=None,
        metavar="N",
        help="extract the teacher's class means from the first N training images (default: all)",
    )
    add("--figure-images", type=int, default=3, metavar="N", help="val tiles in the figure")
    add(
        "--dataset-root",
        default=None,
        metavar="DIR",
        help="folder of the embedded dataset (default: its cache, see nd_common/embedded.py)",
    )
    add(
        "--seed-spread",
        default=DEFAULT_SEED_SPREAD,
        metavar="JSON",
        help="the seed spread of the gain that tools/ablation.py --demo-settings measured; "
        "quoted when it was measured at this run's settings (default: docs/demo_seed_spread.json)",
    )
    add(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE config overrides for teacher and student",
    )
    return one_line_usage_errors(p)


def _main(argv: Optional[list[str]]) -> int:
    from .pipeline import run_demo

    run_demo(demo_argument_parser().parse_args(argv))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Run the demo; returns the exit status (2 with one ERROR line for a user error)."""
    return run_cli(_main, argv)
