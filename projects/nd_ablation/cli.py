"""Command line of ``tools/ablation.py``."""

import argparse
from typing import Optional

from nd_common.configs import Recipe, add_recipe_arguments

from nd_det.errors import ConfigError, one_line_usage_errors, run_cli
from nd_det.utils.seed import seed_argument

from .demo_settings import SPLITS, run_demo_settings
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
    demo = parser.add_argument_group(
        "at the demo's settings",
        "--demo-settings: per seed the demo's teacher, class means, student alone and distilled "
        "student, with the demo's options below (and trailing KEY VALUE overrides of both "
        "configs); reports the gain over the student alone with its seed spread (docs/demo.md)",
    )
    demo.add_argument("--demo-settings", action="store_true", help="run the demo's recipe")
    demo.add_argument(
        "--split",
        default="val",
        choices=sorted(SPLITS),
        help="val: the demo's split (reporting); selection: a held-out fold of the demo's "
        "training tiles (choosing settings)",
    )
    demo.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="finished runs, shared by several settings (default: <output-dir>/cache)",
    )
    demo.add_argument(
        "--spread-file",
        default=None,
        metavar="JSON",
        help="also write the report there (the demo reads docs/demo_seed_spread.json)",
    )
    add_recipe_arguments(demo)
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="--demo-settings: KEY VALUE overrides"
    )
    return one_line_usage_errors(parser)


_DEMO_ONLY = ("split", "cache_dir", "spread_file", "opts") + tuple(Recipe.__dataclass_fields__)


def _main(argv: Optional[list[str]]) -> int:
    parser = ablation_argument_parser()
    args = parser.parse_args(argv)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    if args.demo_settings:
        if args.quick or args.methods or args.domains != list(DOMAINS):
            raise ConfigError(
                "--demo-settings runs the demo's recipe: drop --quick, --methods, --only"
            )
        run_demo_settings(
            Recipe.from_args(args),
            tuple(seeds),
            args.split,
            args.output_dir,
            args.cache_dir,
            args.workers,
            args.dataset_root,
            args.spread_file,
        )
        return 0
    given = [k for k in _DEMO_ONLY if getattr(args, k, None) != parser.get_default(k)]
    if given:
        name = "KEY VALUE overrides" if given[0] == "opts" else "--" + given[0].replace("_", "-")
        raise ConfigError(f"{name}: only with --demo-settings")
    for key in _DEMO_ONLY + ("demo_settings",):
        vars(args).pop(key, None)
    # every option is a field of AblationOptions, under the same name
    run_ablation(
        AblationOptions(**dict(vars(args), seeds=tuple(seeds), domains=tuple(args.domains)))
    )
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """tools/ablation.py: exit status 0, or 2 with one ERROR line for bad input."""
    return run_cli(_main, argv)
