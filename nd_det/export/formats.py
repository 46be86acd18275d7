"""``tools/export_model.py``'s work: an export folder (``tools/export_student.py``) and an image
in, one checked deploy file and its JSON record out, for every format the same way::

    --format pt2          model.pt2    torch.export ExportedProgram   (nd_det.export.program)
    --format onnx         model.onnx   ONNX, for ONNX Runtime         (nd_det.export.onnx_export)
    --format torchscript  model.ts     TorchScript trace (legacy)     (nd_det.export.torchscript)

plus ``<file>.json`` (format, exporter, versions, the input contract, the parity figures).

Bad input (a folder without an export, an unreadable image, an existing output, a missing
optional package, an unsupported student) is refused before any work; the file is built, saved
under a temporary name, loaded back with its own runtime and run on the image at two sizes; it
gets its name only if every detection matches the Python student's (:mod:`.contract`).
"""

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError
from ..utils.atomic_file import atomic_write, atomic_write_json
from ..utils.paths import check_writable, write_failed
from . import onnx_export, program, torchscript
from .contract import (
    RECORD_SUFFIX,
    SizeCheck,
    check_parity,
    deploy_record,
    load_exported_student,
    parity_images,
    read_deploy_image,
)

__all__ = ["FORMATS", "ModelExport", "export_model"]

FORMATS = {"pt2": program, "onnx": onnx_export, "torchscript": torchscript}


@dataclass
class ModelExport:
    """What :func:`export_model` wrote and checked."""

    format: str
    path: str
    info_path: str
    image: str
    checks: list[SizeCheck]
    export_seconds: float
    details: dict[str, object] = field(default_factory=dict)  # format-specific record entries
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.checks[0].input_size

    @property
    def detections(self) -> int:
        return self.checks[0].detections

    @property
    def max_box_diff(self) -> float:
        return max(c.max_box_diff for c in self.checks)

    @property
    def max_score_diff(self) -> float:
        return max(c.max_score_diff for c in self.checks)


def export_model(
    export_dir: str,
    image_path: str,
    fmt: str,
    output: Optional[str] = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> ModelExport:
    """Export the student of ``export_dir`` as ``fmt`` to ``output`` (default
    ``<export_dir>/model.<ext>``) + ``output + ".json"``, checked on ``image_path``.  Raises a
    UserError (nothing written) for bad input, ExportError when the file does not reproduce
    the student."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: no such format; give one of {', '.join(FORMATS)}")
    kind = FORMATS[fmt]
    output = os.path.abspath(output or os.path.join(export_dir, kind.FILE_NAME))
    info_path = output + RECORD_SUFFIX
    check_writable(output, "--output")
    if os.path.exists(output) and not overwrite:
        raise ConfigError(f"--output {output} exists; pass --overwrite to replace it")
    kind.require(device)
    read_deploy_image(image_path, "RGB")  # an unreadable image fails before the model is built
    cfg, model = load_exported_student(export_dir, device)
    kind.check_model(cfg, model)
    images = [image.to(device) for image in parity_images(cfg, image_path, kind.min_side(model))]

    start = time.perf_counter()
    built, details, notes = kind.build(model, images[0])
    export_seconds = time.perf_counter() - start
    checks: list[SizeCheck] = []

    def check_saved(staged: str) -> None:
        checks.extend(check_parity(kind.load(staged, device), model, images, kind.WHAT))

    # check_parity raises ExportError before the file reaches its name
    try:
        atomic_write(output, lambda f: kind.save(built, f), verify=check_saved)
    except OSError as e:  # a full disk: nothing was written
        raise write_failed(
            "--output",
            output,
            e,
            "nothing was written: free space or fix the folder, then export again",
        ) from None
    record = deploy_record(
        cfg,
        fmt,
        output,
        kind.EXPORTER,
        image_path,
        checks,
        kind.sizes(model),
        kind.versions(),
        notes,
        device=device,
        **details,
    )
    try:
        atomic_write_json(record, info_path)
    except OSError as e:
        raise write_failed(
            "--output",
            info_path,
            e,
            f"{output} was written without this record of it: free space, then export again",
        ) from None
    return ModelExport(
        fmt, output, info_path, os.path.abspath(image_path), checks, export_seconds, details, notes
    )
