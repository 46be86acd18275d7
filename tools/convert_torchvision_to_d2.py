#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet file into a detectron2 backbone checkpoint.

The logic (key mapping, checks, file layout) lives in :mod:`nd_det.modeling.weight_conversion`.
"""

import argparse
import sys

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

ignore_detectron2_import_warnings()  # before detectron2 is imported
from nd_det.errors import one_line_usage_errors, run_cli  # noqa: E402
from nd_det.modeling.weight_conversion import (  # noqa: E402
    DEFAULT_KEY_PREFIX,
    SUPPORTED_ARCHITECTURES,
    TORCHVISION_PIXEL_MEAN,
    TORCHVISION_PIXEL_STD,
    convert_torchvision_file,
)

EPILOG = f"""
The converted weights expect what torchvision's ImageNet weights expect: RGB images normalised
with the ImageNet mean/std.  In detectron2's 0..255 pixel scale set:
  INPUT.FORMAT: "RGB"
  MODEL.PIXEL_MEAN: {list(TORCHVISION_PIXEL_MEAN)}
  MODEL.PIXEL_STD: {list(TORCHVISION_PIXEL_STD)}
Backbone to load them into (MODEL.WEIGHTS: <output>):
  resnet18/resnet34  MODEL.BACKBONE.NAME: build_resnet_fpn_backbone,
                     MODEL.RESNETS.DEPTH: 18/34, MODEL.RESNETS.RES2_OUT_CHANNELS: 64
  resnet50           MODEL.BACKBONE.NAME: build_resnet_fpn_backbone,
                     MODEL.RESNETS.STRIDE_IN_1X1: False
Keys are written with the exact prefix of the bottom-up network of a GeneralizedRCNN with an FPN
backbone ("{DEFAULT_KEY_PREFIX}"), so detectron2 loads them by name, without matching heuristics.
Students with MODEL.BACKBONE.NAME build_torchvision_fpn_backbone (MobileNetV2, MobileNetV3, ...)
need no conversion: torchvision's file is their MODEL.WEIGHTS as it is.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert torchvision ImageNet weights (resnet18/34/50) to a detectron2 "
        "checkpoint (.pkl or .pth) for detectron2's ResNet student backbones.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # checked by the converter, whose error says what to do with other torchvision files
    parser.add_argument(
        "--arch",
        required=True,
        metavar="{" + ",".join(SUPPORTED_ARCHITECTURES) + "}",
        help="torchvision architecture the input file belongs to",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="torchvision weight file (a state_dict saved with torch.save)",
    )
    parser.add_argument(
        "--output", required=True, help="converted checkpoint, ending in .pkl or .pth"
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_KEY_PREFIX,
        help=f"prefix of every converted key (default {DEFAULT_KEY_PREFIX!r}; "
        "'backbone.' for a backbone without FPN)",
    )
    return one_line_usage_errors(parser).parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    count = convert_torchvision_file(args.arch, args.input, args.output, args.prefix)
    print(f"Wrote {count} tensors of {args.arch} to {args.output}")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
