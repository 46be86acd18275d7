"""Command-line arguments of the detection tools: detectron2's, plus datasets by path."""

import argparse
import sys

from detectron2.engine import default_argument_parser

from ..errors import one_line_usage_errors

__all__ = ["distill_argument_parser"]

_EPILOG = """
Train on any COCO-format dataset without writing Python:
  tools/train_net.py --config-file CFG \\
      --dataset my_train path/to/train.json path/to/train_images \\
      --dataset my_val path/to/val.json path/to/val_images \\
      DATASETS.TRAIN '("my_train",)' DATASETS.TEST '("my_val",)' MODEL.ROI_HEADS.NUM_CLASSES 3

Standard COCO is found under $DETECTRON2_DATASETS/coco (default ./datasets/coco).
"""


def _flags_after_overrides(parser: argparse.ArgumentParser) -> None:
    """detectron2's ``opts`` (``nargs=REMAINDER``) takes everything after the first override: a
    flag given after the overrides (``... SOLVER.MAX_ITER 10 --resume``, a LazyConfig's
    ``... train.max_iter=10 --resume``) is parsed as a flag here, not merged as a config key (no
    override starts with ``--``); required flags are looked for once all are parsed."""
    parse = parser.parse_args

    def parse_args(args=None, namespace=None):
        asks_help = {"-h", "--help"} & set(sys.argv[1:] if args is None else args)
        # --help shows the required flags as such: they stay required for it
        required = [a for a in parser._actions if a.required and a.option_strings and not asks_help]
        for action in required:
            action.required = False
        try:
            namespace, head = parse(args, namespace), []
            while any(o.startswith("--") for o in namespace.opts):
                at = next(i for i, o in enumerate(namespace.opts) if o.startswith("--"))
                head += namespace.opts[:at]
                namespace = parse(namespace.opts[at:], namespace)
        finally:
            for action in required:
                action.required = True
        namespace.opts = head + namespace.opts
        missing = [a.option_strings[0] for a in required if not getattr(namespace, a.dest)]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
        return namespace

    parser.parse_args = parse_args


def distill_argument_parser(
    epilog: str = _EPILOG, require_config: bool = True
) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` with ``--config-file`` required (unless
    ``require_config`` is False), flags accepted after the ``KEY VALUE`` overrides, one-line
    usage errors, and nd-det's flags for the training data and the teacher's evaluation."""
    parser = one_line_usage_errors(default_argument_parser(epilog))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format dataset NAME from a JSON file and an image folder "
        "(repeatable); then name it in DATASETS.TRAIN / DATASETS.TEST",
    )
    parser.add_argument(
        "--allow-degenerate-boxes",
        action="store_true",
        help="--dataset files may hold boxes of zero width/height (logged, then dropped by "
        "detectron2, as in COCO train2017); without it they are an error",
    )
    parser.add_argument(
        "--eval-teacher",
        action="store_true",
        help="with --eval-only: also evaluate the teacher of MODEL.DISTILL on the same test sets "
        "and print teacher and student AP side by side",
    )
    parser._option_string_actions["--config-file"].required = require_config
    _flags_after_overrides(parser)
    return parser
