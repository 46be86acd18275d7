"""Command line of ``tools/ablation.py``."""

import argparse
from typing import Optional

from nd_det.errors import one_line_usage_errors, run_cli
from nd_det.utils.seed import seed_argument

from .plan import DEFAULT_SEEDS, QUICK_SEEDS
from .runner import DOMAINS, AblationOptions, run_ablation

_EPILOG = """
Examples:
  python tools/ablation.py                          # the default protocol (docs/ablation.md)
  python tools/ablation.py --quick --output-dir output/ablation_quick   # toy sizes
  python tools/ablation.py --only detection --seeds 0 1 2 3 4

A rerun with the same options reuses every finished run (cached under <output-dir>/cache).
"""


def ablation_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/ablation.py",
        description="Measure what the ND loss adds to KD, DKD, DIST and ReviewKD (X vs X++) on "
        "the embedded tree-crown detection data and on Fashion-MNIST, over several seeds; "
        "writes results.json, results.md and results.png.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output-dir",
        default="output/ablation",
        metavar="DIR",
        help="results, per-run outputs and the run cache (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_argument,
        nargs="+",
        default=None,
        metavar="S",
        help="seeds of every method (default: 0 1 2; --quick: 0 1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="parallel single-threaded processes (default 0: every core)",
    )
    parser.add_argument(
        "--only",
        dest="domains",
        nargs="+",
        default=list(DOMAINS),
        choices=DOMAINS,
        help="run one half only (default: both)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="NAME",
        help="the methods to run, e.g. KD KD++ DKD DKD++ (the student alone "
        "always runs; default: detection without DKD / DKD++, every "
        "classification method)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the whole pipeline at toy size (a smoke test, not a measurement)",
    )
    parser.add_argument(
        "--dataset-root",
        default=None,
        metavar="DIR",
        help="folder of the embedded dataset (default: its cache)",
    )
    return one_line_usage_errors(parser)


def _main(argv: Optional[list[str]]) -> int:
    args = ablation_argument_parser().parse_args(argv)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    # every option is a field of AblationOptions, under the same name
    run_ablation(
        AblationOptions(**dict(vars(args), seeds=tuple(seeds), domains=tuple(args.domains)))
    )
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """tools/ablation.py: exit status 0, or 2 with one ERROR line for bad input."""
    return run_cli(_main, argv)
