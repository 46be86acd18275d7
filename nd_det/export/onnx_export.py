"""``--format onnx``: the student as an ONNX file (``model.onnx``) for ONNX Runtime.

The file comes from torch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``,
the default since torch 2.9): :class:`nd_det.export.graph.ExportableStudent` is exported with
torch.export and translated by onnxscript (torchvision's ``nms`` and ``roi_align`` become
ONNX ``NonMaxSuppression`` and ``RoiAlign``).  Input ``image`` (float32, ``[3, height,
width]``, both dynamic), outputs ``boxes`` ``[detections, 4]``, ``scores`` ``[detections]``,
``classes`` ``[detections]`` (int64).  No part needs the legacy TorchScript-based exporter.

onnx, onnxscript and onnxruntime are optional dependencies of nd-det (the ``onnx`` extra).
"""

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from typing import BinaryIO, Callable, Optional

import torch

from ..errors import MissingDependencyError
from . import program
from .contract import INPUT_NAME, OUTPUT_NAMES
from .exportable import exportable
from .graph import dynamic_image_shapes, exporting
from .student import DEPLOY_FILE_NAMES

__all__ = [
    "FILE_NAME",
    "WHAT",
    "EXPORTER",
    "PACKAGES",
    "require",
    "check_model",
    "min_side",
    "sizes",
    "versions",
    "build",
    "save",
    "load",
    "onnx_session",
]

FILE_NAME = DEPLOY_FILE_NAMES["onnx"]
WHAT = "ONNX Runtime (CPUExecutionProvider)"
EXPORTER = "torch.onnx.export(dynamo=True) of nd_det.export.graph.ExportableStudent"
# the import names of the optional packages (their pip names are the same)
PACKAGES = ("onnx", "onnxscript", "onnxruntime")
DETECTIONS_DIM = "detections"  # the name of the outputs' first dimension

# the same model checks and sizes as the .pt2 export: both export ExportableStudent
check_model, min_side, sizes = program.check_model, program.min_side, program.sizes


def require(device: str) -> None:
    """The optional packages are installed and the device is the CPU (one line otherwise)."""
    program.require(device)
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"--format onnx needs the Python package {missing[0]}, which is not installed: pip "
            f"install {' '.join(PACKAGES)} (or pip install -e '.[onnx]' in the nd-det checkout)"
        )


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PACKAGES}


def build(
    model: torch.nn.Module, image: torch.Tensor, shared: Optional[dict] = None
) -> tuple[object, dict, list]:
    """(the ONNX ModelProto, what the record says about it, notes).  The torch.export program of
    the ``.pt2`` export of the same run (``shared``) is translated when there is one."""
    shared = shared or {}
    with exporting():
        exported = torch.onnx.export(
            shared.get("program") or exportable(model),
            (image,),
            dynamo=True,
            dynamic_shapes=None if "program" in shared else dynamic_image_shapes(model),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            verbose=False,
        )
    proto = exported.model_proto
    # the exporter names the dimensions after its symbols ("s62", "Min(100, u21)")
    image_dims = proto.graph.input[0].type.tensor_type.shape.dim
    image_dims[1].dim_param, image_dims[2].dim_param = "height", "width"
    for output in proto.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = DETECTIONS_DIM
    opsets = {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import}
    return proto, {"opset": opsets.get("ai.onnx")}, []


def save(proto, file: BinaryIO) -> None:
    file.write(proto.SerializeToString())


def onnx_session(path: str, threads: int = 0):
    """An ONNX Runtime session on the CPU (``threads`` intra-op threads; 0: its default)."""
    import onnxruntime  # optional: require() has checked it is there

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def load(path: str, device: str) -> Callable[[torch.Tensor], Sequence[torch.Tensor]]:
    session = onnx_session(path)

    def run(image: torch.Tensor) -> list[torch.Tensor]:
        outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image.cpu().numpy()})
        return [torch.from_numpy(x) for x in outputs]

    return run
