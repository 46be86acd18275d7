"""Command line of the embedded demo (``python tools/demo.py``)."""

import argparse
from typing import Optional

from nd_common.configs import (
    DEFAULT_METHOD,
    DEFAULT_STUDENT_CONFIG,
    DEFAULT_TEACHER_CONFIG,
    DISTILL_METHODS,
)

from nd_det.errors import one_line_usage_errors, run_cli
from nd_det.utils.seed import seed_argument

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
    add(
        "--teacher-config",
        default=DEFAULT_TEACHER_CONFIG,
        metavar="YAML",
        help="the teacher's config (default: projects/nd_common/configs/teacher_MV2_FPN.yaml)",
    )
    add(
        "--student-config",
        default=DEFAULT_STUDENT_CONFIG,
        metavar="YAML",
        help="the student's config (default: projects/nd_common/configs/student_MV2x0.5_FPN.yaml)",
    )
    add(
        "--method",
        default=DEFAULT_METHOD,
        choices=sorted(DISTILL_METHODS),
        help="distillation of the second student: "
        + ", ".join(f"{k} = {v[1]}" for k, v in sorted(DISTILL_METHODS.items()))
        + " (default: %(default)s)",
    )
    add(
        "--teacher-iters",
        type=int,
        default=None,
        metavar="N",
        help="teacher training iterations (default: the config's MAX_ITER)",
    )
    add(
        "--student-iters",
        type=int,
        default=None,
        metavar="N",
        help="iterations of each student run (default: the config's MAX_ITER)",
    )
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
