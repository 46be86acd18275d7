"""Command line of ``tools/export_model.py``: an export folder and an image in, checked deploy
files (one per ``--format``) and their JSON records out."""

import argparse
import time
from typing import Optional

from ..errors import one_line_usage_errors, run_cli
from .contract import RECORD_SUFFIX
from .formats import FORMATS, export_models

__all__ = ["export_model_argument_parser", "main"]

_EPILOG = f"""
Example (after tools/export_student.py wrote deploy/R50_nd):
  tools/export_model.py --export-dir deploy/R50_nd --format pt2 --image image.jpg
  tools/export_model.py --export-dir deploy/R50_nd --format onnx --image image.jpg
  tools/export_model.py --export-dir deploy/R50_nd --format pt2 onnx --image image.jpg  # both

Writes deploy/R50_nd/model.pt2 (or model.onnx, model.ts) and model.pt2{RECORD_SUFFIX}.  Then:
  program = torch.export.load("deploy/R50_nd/model.pt2").module()
  boxes, scores, classes = program(image)  # float32 (3, H, W), 0..255, as the .json says
  session = onnxruntime.InferenceSession("deploy/R50_nd/model.onnx")
  boxes, scores, classes = session.run(None, {{"image": image.numpy()}})

--format torchscript is the legacy route (torch deprecates TorchScript).  See docs/deploy.md.
"""


def export_model_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a student (the folder tools/export_student.py wrote) as deploy files, "
        "each checked against the student in Python on an image at two sizes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--export-dir",
        required=True,
        metavar="DIR",
        help="folder written by tools/export_student.py (config.yaml + model_final.pth)",
    )
    parser.add_argument(
        "--format",
        required=True,
        nargs="+",
        choices=list(FORMATS),
        help="pt2: torch.export program; onnx: ONNX for ONNX Runtime; torchscript: TorchScript "
        "trace (legacy); several at once: pt2 and onnx then share one torch.export",
    )
    parser.add_argument(
        "--image",
        required=True,
        metavar="FILE",
        help="image the export is checked on (JPEG, PNG), at the test size and at a second size",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="file to write, with one --format (default <export-dir>/model.pt2, model.onnx or "
        "model.ts)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torchscript only: the device to trace on, which the file then runs on (default cpu)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    return one_line_usage_errors(parser)


def _report(result) -> None:
    sizes = " and ".join(
        f"{c.input_size[0]}x{c.input_size[1]} ({c.detections} detections)" for c in result.checks
    )
    print(
        f"Wrote {result.path} and {result.info_path}: {result.format} export of the student "
        f"in {result.export_seconds:.1f} s, checked against the student in Python on "
        f"{result.image} at {sizes}: max |box diff| {result.max_box_diff:.2g} px, max "
        f"|score diff| {result.max_score_diff:.2g}, classes equal"
    )
    sites = result.details.get("tracer_warnings")
    if sites:
        print(
            f"The tracer warned at {len(sites)} places of the model's Python-side shape logic "
            "(detectron2, torchvision; listed in the .json): expected for detectron2 models, "
            "and the check above passed; see docs/deploy.md"
        )
    for note in result.notes:
        print(f"NOTE: {note}")


def _main(argv: Optional[list[str]]) -> int:
    args = export_model_argument_parser().parse_args(argv)
    start = time.perf_counter()
    for result in export_models(
        args.export_dir,
        args.image,
        args.format,
        args.output,
        device=args.device,
        overwrite=args.overwrite,
    ):
        _report(result)
    print(f"({time.perf_counter() - start:.1f} s in all)")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """tools/export_model.py: returns the exit status (2 for a user error, one line)."""
    return run_cli(_main, argv)
