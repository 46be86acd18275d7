"""tools/import_class_means.py: the reference's published class-mean tables, for detection
(``--task detection``, :mod:`.reference`) or classification (``--task classification``,
:mod:`.reference_classification`), written in nd-det's class-means format."""

import argparse
from typing import Optional

from ..errors import DataError, one_line_usage_errors, run_cli
from .reference import DEFAULT_DIM, DEFAULT_NUM_CLASSES, DEFAULT_TEACHER_CONFIG, import_class_means

__all__ = ["parser", "main"]

_EPILOG = """
  python tools/import_class_means.py --input R101_emb.json
      -> class_means/coco_faster_rcnn_R_101_FPN_3x.pth (the R50 / R18 configs' CLASS_MEANS)
  python tools/import_class_means.py --input R50_emb.json \\
      --teacher-config COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml
      -> class_means/coco_faster_rcnn_R_50_FPN_3x.pth (the MobileNetV2 configs' CLASS_MEANS)

The teacher flags must equal MODEL.DISTILL.TEACHER_CONFIG / TEACHER_WEIGHTS / TEACHER_OPTS of
the config that trains with the table (training warns otherwise).  See docs/class_means.md.

  python tools/import_class_means.py --task classification --input center_emb_train.json \\
      --teacher-model resnet50 --teacher-weights pretrained/resnet50-0676ba61.pth
      -> output/classification/imagenet/teachers/resnet50/class_means.pth (the reference's
         ImageNet ResNet-50 table, for the configs with that teacher; no background row)

Classification: --teacher-model, --teacher-weights and --dataset must equal
distill.teacher.name, distill.teacher.weights and data.name of the config that trains with it
(training refuses it otherwise).  See docs/paper_rows.md.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write nd-det's class-means file from a published JSON table "
        '({"0": [...], ..., "80": [...]}, background last).',
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--task",
        choices=("detection", "classification"),
        default="detection",
        help="detection (a table with a background row, default) or classification "
        "(the reference's center_emb_train.json tables)",
    )
    p.add_argument(
        "--input",
        required=True,
        metavar="JSON",
        help="the JSON table, e.g. the reference code's R101_emb.json or R50_emb.json",
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="PTH",
        help="where to write (default: class_means/coco_<teacher config name>.pth, "
        "the path the shipped COCO configs read for that teacher)",
    )
    p.add_argument(
        "--teacher-config",
        default=None,
        help="the teacher the table belongs to, as MODEL.DISTILL.TEACHER_CONFIG "
        f"(default: {DEFAULT_TEACHER_CONFIG}, the R50 / R18 configs' teacher); "
        "classification: its training config, recorded only",
    )
    p.add_argument(
        "--teacher-weights",
        default=None,
        help="its weights, as MODEL.DISTILL.TEACHER_WEIGHTS (default: the model-zoo "
        "weights of --teacher-config, as a detectron2:// URL like the configs); "
        "classification (required): the file of distill.teacher.weights",
    )
    p.add_argument(
        "--teacher-model",
        default=None,
        help="classification: the teacher's classifier, as distill.teacher.name",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="classification: data.name of the training config (default image_folder)",
    )
    p.add_argument(
        "--teacher-opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="as MODEL.DISTILL.TEACHER_OPTS of the training config (default: none)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="foreground classes; the table has one more row, the background "
        f"(default {DEFAULT_NUM_CLASSES}: COCO); classification: the classes, one "
        "row each (default 1000: ImageNet)",
    )
    p.add_argument(
        "--dim",
        type=int,
        default=None,
        help=f"numbers per row, the teacher's box-head width (default {DEFAULT_DIM}); "
        "classification: its embedding size (default: that of --teacher-model)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return one_line_usage_errors(p)


def _main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.task == "classification":
        from .reference_classification import classification_main

        return classification_main(args)
    for flag, value in (("--teacher-model", args.teacher_model), ("--dataset", args.dataset)):
        if value is not None:
            raise DataError(
                f"{flag} is a flag of --task classification; a detection table's "
                "teacher is --teacher-config / --teacher-weights"
            )
    path, table = import_class_means(
        args.input,
        args.output,
        args.teacher_config or DEFAULT_TEACHER_CONFIG,
        args.teacher_weights,
        args.teacher_opts,
        DEFAULT_NUM_CLASSES if args.num_classes is None else args.num_classes,
        DEFAULT_DIM if args.dim is None else args.dim,
        args.overwrite,
    )
    print(
        f"wrote {path}: {table.num_classes} x {table.dim} class means from "
        f"{table.metadata['source_file']} (sha256 {table.metadata['source_sha256'][:12]}...) "
        f"for teacher {table.metadata['teacher_config']} "
        f"({table.metadata['teacher_weights']}); counts unknown (stored as 1)"
    )
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """tools/import_class_means.py: returns the exit status (2 for a user error, one line)."""
    return run_cli(_main, argv)
