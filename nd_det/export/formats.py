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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError
from ..utils.atomic_file import atomic_write, atomic_write_json
from ..utils.paths import check_overwrite, check_writable, writing
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

__all__ = ["FORMATS", "ModelExport", "export_models", "export_model"]

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


def export_models(
    export_dir: str,
    image_path: str,
    formats: Sequence[str],
    output: Optional[str] = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> list[ModelExport]:
    """Export the student of ``export_dir`` in each of ``formats`` to ``<export_dir>/model.<ext>``
    (or ``output``, for one format) + ``<file>.json``, each checked on ``image_path``; ``pt2``
    and ``onnx`` in one call share one torch.export of the student.  Raises a UserError
    (nothing written) for bad input, ExportError when a file does not reproduce the student."""
    formats = list(dict.fromkeys(formats))
    outputs = [output or os.path.join(export_dir, FORMATS[fmt].FILE_NAME) for fmt in formats]
    outputs = [os.path.abspath(path) for path in outputs]
    if len(outputs) > 1 and output:
        raise ConfigError("--output names one file: give one --format with it")
    for fmt, path in zip(formats, outputs):
        check_writable(path, "--output")
        check_overwrite(path, "--output", overwrite)
        FORMATS[fmt].require(device)
    read_deploy_image(image_path, "RGB")  # an unreadable image fails before the model is built
    cfg, model = load_exported_student(export_dir, device)
    shared: dict[str, object] = {}  # what one format's export leaves to the next (the program)
    return [
        _export(cfg, model, fmt, path, image_path, device, shared)
        for fmt, path in zip(formats, outputs)
    ]


def _export(cfg, model, fmt: str, output: str, image_path: str, device: str, shared: dict):
    """One format: build, save under a temporary name, check the reloaded file on two sizes,
    give it its name, write its record."""
    kind = FORMATS[fmt]
    kind.check_model(cfg, model)
    images = [image.to(device) for image in parity_images(cfg, image_path, kind.min_side(model))]
    start = time.perf_counter()
    built, details, notes = kind.build(model, images[0], shared)
    export_seconds = time.perf_counter() - start
    checks: list[SizeCheck] = []

    def check_saved(staged: str) -> None:
        checks.extend(check_parity(kind.load(staged, device), model, images, kind.WHAT))

    # check_parity raises ExportError before the file reaches its name
    with writing("--output", output, "nothing was written"):  # a full disk, say
        atomic_write(output, lambda f: kind.save(built, f), verify=check_saved)
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
    info_path = output + RECORD_SUFFIX
    with writing("--output", info_path, f"{output} has no record"):
        atomic_write_json(record, info_path)
    return ModelExport(
        fmt, output, info_path, os.path.abspath(image_path), checks, export_seconds, details, notes
    )


def export_model(export_dir: str, image_path: str, fmt: str, **options) -> ModelExport:
    """:func:`export_models` for one format."""
    return export_models(export_dir, image_path, [fmt], **options)[0]
