"""Command line of the embedded demo (``python tools/demo.py``)."""
import argparse
from typing import List, Optional

from nd_det.errors import one_line_usage_errors, run_cli
from nd_det.utils.seed import seed_argument

from .configs import DEFAULT_METHOD, DEFAULT_STUDENT_CONFIG, DEFAULT_TEACHER_CONFIG
from .configs import DISTILL_METHODS, METHOD_NAMES

__all__ = ["demo_argument_parser", "main"]

_EPILOG = """
Examples:
  python tools/demo.py                                  # the defaults (~6.5 min on 2 idle cores)
  python tools/demo.py --method kd_nd --output-dir output/demo_kdpp
  python tools/demo.py --teacher-iters 300 --student-iters 300 --threads 2
  python tools/demo.py --student-config my_student.yaml MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 128

Trailing KEY VALUE pairs override both the teacher's and the students' config.
"""


def demo_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/demo.py",
        description="Offline demo of nd-det on the embedded tree-crown data: train a teacher, "
        "extract its class means, train a student alone and distilled (same seed and "
        "schedule), evaluate all three with COCO AP, export the distilled student, and write "
        "a results table (JSON + Markdown) and a figure.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default="output/demo", metavar="DIR",
                        help="where everything is written (default: %(default)s)")
    parser.add_argument("--teacher-config", default=DEFAULT_TEACHER_CONFIG, metavar="YAML",
                        help="the teacher's config (default: configs/Demo/teacher_MV2_FPN.yaml)")
    parser.add_argument("--student-config", default=DEFAULT_STUDENT_CONFIG, metavar="YAML",
                        help="the student's config (default: "
                        "configs/Demo/student_MV2x0.5_FPN.yaml)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(DISTILL_METHODS),
                        help="distillation of the second student: "
                        + ", ".join(f"{k} = {METHOD_NAMES[k]}" for k in sorted(DISTILL_METHODS))
                        + " (default: %(default)s)")
    parser.add_argument("--teacher-iters", type=int, default=None, metavar="N",
                        help="teacher training iterations (default: the config's MAX_ITER)")
    parser.add_argument("--student-iters", type=int, default=None, metavar="N",
                        help="iterations of each student run (default: the config's MAX_ITER)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="seed of everything (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch CPU threads (default: 1, the safe choice on a machine shared "
                        "with other jobs; more is faster on an idle one, and the numbers can "
                        "differ slightly with another count)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="processes for the two student runs, side by side, each with "
                        "--threads threads (default 0: 2 where the machine has 2 cores or more; "
                        "1 runs them one after the other, with the same numbers)")
    parser.add_argument("--log-period", type=int, default=10, metavar="N",
                        help="a progress line (and a metrics.json record) every N iterations")
    parser.add_argument("--class-means-images", type=int, default=None, metavar="N",
                        help="extract the teacher's class means from the first N training "
                        "images only (default: all)")
    parser.add_argument("--figure-images", type=int, default=3, metavar="N",
                        help="val tiles drawn in the figure (default: %(default)s)")
    parser.add_argument("--dataset-root", default=None, metavar="DIR",
                        help="folder of the embedded dataset (default: its cache, see "
                        "nd_det/data/embedded.py)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides for teacher and student")
    return one_line_usage_errors(parser)


def _main(argv: Optional[List[str]]) -> int:
    from .pipeline import DemoOptions, run_demo

    # every option is a field of DemoOptions, under the same name
    run_demo(DemoOptions(**vars(demo_argument_parser().parse_args(argv))))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; returns the exit status (2 with one ERROR line for a user error)."""
    return run_cli(_main, argv)
