"""Command line of ``tools/export_torchscript.py``: an export folder and an image in, a checked
TorchScript file out."""
import argparse
import time
from typing import List, Optional

from ..errors import one_line_usage_errors, run_cli
from .torchscript import TORCHSCRIPT_INFO_SUFFIX, TORCHSCRIPT_NAME, export_torchscript

__all__ = ["torchscript_argument_parser", "main"]

_EPILOG = f"""
Example (after tools/export_student.py wrote deploy/MV3_from_R50_nd):
  tools/export_torchscript.py --export-dir deploy/MV3_from_R50_nd --image image.jpg

Writes deploy/MV3_from_R50_nd/{TORCHSCRIPT_NAME} and {TORCHSCRIPT_NAME}{TORCHSCRIPT_INFO_SUFFIX}.
Then, with torch and torchvision only:
  import torch, torchvision
  model = torch.jit.load("deploy/MV3_from_R50_nd/{TORCHSCRIPT_NAME}")
  boxes, scores, classes = model(image)  # float32 (3, H, W), 0..255, resized; see the .json
"""


def torchscript_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Trace an exported student to TorchScript and check it against the student "
        "in Python on one image.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", required=True, metavar="DIR",
                        help="folder written by tools/export_student.py (config.yaml + "
                        "model_final.pth)")
    parser.add_argument("--image", required=True, metavar="FILE",
                        help="image the student is traced and checked on (JPEG, PNG)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help=f"TorchScript file to write (default <export-dir>/{TORCHSCRIPT_NAME})")
    parser.add_argument("--device", default="cpu",
                        help="device to trace on, and the one the file then runs on "
                        "(default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return one_line_usage_errors(parser)


def _main(argv: Optional[List[str]]) -> int:
    args = torchscript_argument_parser().parse_args(argv)
    start = time.perf_counter()
    result = export_torchscript(args.export_dir, args.image, args.output, device=args.device,
                                overwrite=args.overwrite)
    height, width = result.input_size
    print(f"Wrote {result.path} and {result.info_path}: traced on {result.image} "
          f"({height}x{width} after resizing) in {result.trace_seconds:.1f} s; "
          f"{result.detections} detections, TorchScript vs Python: max |box diff| "
          f"{result.max_box_diff:.2g} px, max |score diff| {result.max_score_diff:.2g}, "
          f"classes equal ({time.perf_counter() - start:.1f} s in all)")
    if result.tracer_warnings:
        print(f"The tracer warned at {len(result.tracer_warnings)} places of the model's "
              "Python-side shape logic (detectron2, torchvision; listed in the .json): expected "
              "for detectron2 models, and the check above passed; see docs/deploy.md")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """tools/export_torchscript.py: returns the exit status (2 for a user error, one line)."""
    return run_cli(_main, argv)
