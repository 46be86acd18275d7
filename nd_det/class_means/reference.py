"""Import a published class-means table into nd-det's class-means format.

The paper's code ships its detection tables as JSON (``Detection/configs/Center/R101_emb.json``
and ``R50_emb.json``)::

    {"0": [1024 floats], "1": [...], ..., "80": [...]}

one row per class index written as a string, background last (index NUM_CLASSES), values
rounded to 4 decimals, no sample counts.  :func:`import_class_means` checks such a file (keys
"0".."K" contiguous, K + 1 = ``num_classes`` + 1 rows, ``dim`` numbers each, all finite, no
all-zero row) and writes nd-det's format with metadata naming the source file (and its sha256)
and the teacher it belongs to (the same identity a distillation config gives
:func:`nd_det.modeling.teacher.teacher_identity`, so training with that config accepts it
silently).  Counts are unknown: every row is stored with count 1 and ``counts_known`` False.

``python tools/import_class_means.py --input R101_emb.json`` (:mod:`.import_cli`).  The
reference's classification tables (no background row): :mod:`.reference_classification`.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Optional

import torch

from ..errors import DataError
from ..utils.paths import check_writable
from ..utils.text import short_list
from ..utils.values import is_number
from .table import ClassMeans, directionless_rows, save_class_means

__all__ = [
    "import_class_means",
    "read_published_table",
    "imported_metadata",
    "check_output",
    "model_zoo_weights",
    "default_output",
    "DEFAULT_TEACHER_CONFIG",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_DIM",
]

# the teacher of the default R50 / R18 configs (configs/COCO-Distill/Base-Distill-RCNN-FPN.yaml)
DEFAULT_TEACHER_CONFIG = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"
DEFAULT_NUM_CLASSES = 80  # COCO
DEFAULT_DIM = 1024  # FastRCNNConvFCHead FC_DIM of the model-zoo detectors

_SOURCE_FORMAT = (
    '{"0": [D numbers], ..., "K": [...]}: class index as a string, background '
    "last (the reference code's Detection/configs/Center/*_emb.json)"
)


# ---------------------------------------------------------------------- the teacher
def model_zoo_weights(teacher_config: str) -> Optional[str]:
    """The ``detectron2://`` URL of a detectron2 model-zoo config's weights (as the shipped
    configs write TEACHER_WEIGHTS), or None for an existing file or a model-zoo config without
    published weights; raises DataError when ``teacher_config`` is neither."""
    if os.path.isfile(teacher_config):
        return None
    from detectron2 import model_zoo  # needs pkg_resources: loaded only for a model-zoo name
    from detectron2.utils.file_io import Detectron2Handler

    try:
        model_zoo.get_config_file(teacher_config)
    except RuntimeError:
        raise DataError(
            f"--teacher-config {teacher_config!r} is neither an existing file nor a detectron2 "
            f"model-zoo config name (e.g. {DEFAULT_TEACHER_CONFIG!r})"
        ) from None
    try:
        url = model_zoo.get_checkpoint_url(teacher_config)
    except RuntimeError:
        return None
    s3 = Detectron2Handler.S3_DETECTRON2_PREFIX
    return Detectron2Handler.PREFIX + url[len(s3) :] if url.startswith(s3) else url


def _teacher_identity(
    teacher_config: str, teacher_weights: Optional[str], teacher_opts: Sequence[str]
) -> dict:
    """What a distillation config with these MODEL.DISTILL.TEACHER_* values calls its teacher."""
    from detectron2.config import get_cfg

    from ..config import add_distill_config
    from ..modeling.teacher import teacher_identity

    zoo_weights = model_zoo_weights(teacher_config)  # also refuses an unknown config name
    teacher_weights = teacher_weights or zoo_weights
    if teacher_weights is None:
        raise DataError(
            f"--teacher-config {teacher_config!r} is not a model-zoo config with known "
            "weights: give --teacher-weights, exactly as MODEL.DISTILL.TEACHER_WEIGHTS of "
            "the config that will train with this table"
        )
    cfg = add_distill_config(get_cfg())
    cfg.MODEL.DISTILL.TEACHER_CONFIG = teacher_config
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher_weights
    cfg.MODEL.DISTILL.TEACHER_OPTS = list(teacher_opts)
    return teacher_identity(cfg)


def default_output(teacher_config: str) -> str:
    """``class_means/coco_<teacher config name>.pth``: the MODEL.DISTILL.CLASS_MEANS of the
    shipped COCO configs for their model-zoo teachers."""
    stem = os.path.splitext(os.path.basename(teacher_config))[0]
    return os.path.join("class_means", f"coco_{stem}.pth")


# ---------------------------------------------------------------------- the JSON table
def _refuse(path: str, problem: str) -> DataError:
    return DataError(f"--input {path}: {problem}")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _row_indices(path: str, table: dict, num_classes: int, background: bool = True) -> list[int]:
    """The class index of each key; exactly 0..num_classes - 1 (and num_classes, the background
    row, when ``background``) must be present."""
    rows = num_classes + int(background)
    last = f'"{rows - 1}"' + (" (background last)" if background else "")
    indices = {}
    for key in table:
        if not (key.isdigit() and key.isascii() and (key == "0" or not key.startswith("0"))):
            raise _refuse(path, f'key {key!r} is not a class index; the keys must be "0" .. {last}')
        indices[int(key)] = key
    present = sorted(indices)
    if present == list(range(len(present))) and len(present) != rows:
        raise _refuse(
            path,
            f'holds {len(present)} rows ("0".."{len(present) - 1}") but '
            f"--num-classes {num_classes} needs {rows}"
            f"{' (classes + background)' if background else ''}; pass "
            f"--num-classes {len(present) - int(background)} if that is the "
            "dataset's number of classes",
        )
    missing = [k for k in range(rows) if k not in indices]
    if missing:
        raise _refuse(
            path,
            f'rows {short_list(missing, 10)} of "0".."{rows - 1}" are '
            "missing: the keys must be contiguous, one row per class"
            f"{' and the background last' if background else ''}",
        )
    extra = [k for k in present if k >= rows]
    if extra:
        raise _refuse(
            path,
            f'rows {short_list(extra, 10)} lie beyond "{rows - 1}" (the '
            f"{'background' if background else 'last'} row for --num-classes "
            f"{num_classes})",
        )
    return list(range(rows))


def _row_values(path: str, key: str, row, dim: int) -> list[float]:
    if not isinstance(row, list):
        raise _refuse(path, f"row {key!r} is a {type(row).__name__}, not a list of {dim} numbers")
    if len(row) != dim:
        raise _refuse(
            path,
            f"row {key!r} has {len(row)} values but --dim is {dim} (the "
            f"teacher's embedding size); pass --dim {len(row)} if that is the "
            "teacher's",
        )
    for position, value in enumerate(row):
        if not is_number(value):
            raise _refuse(path, f"row {key!r} holds {value!r} at position {position}, not a number")
    return row


def read_published_table(
    path: str,
    num_classes: int = DEFAULT_NUM_CLASSES,
    dim: int = DEFAULT_DIM,
    background: bool = True,
) -> tuple[torch.Tensor, str]:
    """The (num_classes + 1, dim) float32 table of a JSON like the reference's (num_classes
    rows without ``background``), and the file's sha256; raises DataError naming the first
    problem."""
    if not os.path.isfile(path):
        raise _refuse(
            path,
            "file not found"
            if not os.path.exists(path)
            else "is not a file; give the JSON table (e.g. R101_emb.json)",
        )
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as e:
        raise _refuse(path, f"cannot be read ({e.strerror})") from None
    try:
        table = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise _refuse(
            path, "is not a JSON text file (not UTF-8); give the JSON table such as R101_emb.json"
        ) from None
    except json.JSONDecodeError as e:
        raise _refuse(
            path, f"is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})"
        ) from None
    except ValueError as e:  # a key twice
        raise _refuse(path, f"{e}: each class must have exactly one row") from None
    if not isinstance(table, dict):
        raise _refuse(
            path, f"the top level is a {type(table).__name__}, expected an object {_SOURCE_FORMAT}"
        )
    rows = _row_indices(path, table, num_classes, background)
    means = torch.tensor(
        [_row_values(path, str(k), table[str(k)], dim) for k in rows], dtype=torch.float64
    )
    bad = torch.nonzero(~torch.isfinite(means).all(dim=1)).flatten().tolist()
    if bad:
        raise _refuse(path, f"NaN/inf in row(s) {short_list(bad, 10)}; every mean must be finite")
    zero = directionless_rows(means)
    if zero:
        raise _refuse(
            path,
            f"row(s) {short_list(zero, 10)} are all zeros or of (almost) zero "
            "norm: ND needs a direction for every class (was the table cut or "
            "made without samples?)",
        )
    return means.float(), hashlib.sha256(raw).hexdigest()


def _coco_class_names(num_classes: int) -> list[str]:
    if num_classes != DEFAULT_NUM_CLASSES:
        return []
    from detectron2.data import MetadataCatalog  # detectron2's built-in COCO metadata

    return list(MetadataCatalog.get("coco_2017_train").thing_classes) + ["background"]


def check_output(output: str) -> None:
    """``--output`` names a torch file that can be written."""
    if str(output).lower().endswith(".json"):
        raise DataError(
            f"--output {output}: the imported table is written in nd-det's "
            "class-means format (a torch file); give a .pth path"
        )
    check_writable(output, "--output")


def imported_metadata(json_path: str, sha256: str, source_format: str, how_made: str) -> dict:
    """What every imported table records: its source, and that its counts are unknown."""
    return dict(
        protocol="imported",
        protocol_description=f"a published table, imported; {how_made}",
        source_file=os.path.basename(json_path),
        source_sha256=sha256,
        source_format=source_format,
        source_rounding="as published (the reference rounds to 4 decimals)",
        counts_known=False,
        counts_note="the source has no sample counts; each row is stored with count 1",
        zero_filled_classes=[],
    )


def import_class_means(
    json_path: str,
    output: Optional[str] = None,
    teacher_config: str = DEFAULT_TEACHER_CONFIG,
    teacher_weights: Optional[str] = None,
    teacher_opts: Sequence[str] = (),
    num_classes: int = DEFAULT_NUM_CLASSES,
    dim: int = DEFAULT_DIM,
) -> tuple[str, ClassMeans]:
    """Check ``json_path`` and write it to ``output`` (default :func:`default_output`) in
    nd-det's class-means format for the given teacher (``teacher_weights`` None: the model-zoo
    weights of ``teacher_config``).  Everything is checked before anything is written.
    Returns (the path written, the table)."""
    if num_classes < 1:
        raise DataError(
            f"--num-classes {num_classes}: give the number of foreground classes (80 for COCO)"
        )
    if dim < 1:
        raise DataError(f"--dim {dim}: give the teacher's box-head width (1024)")
    output = output or default_output(teacher_config)
    check_output(output)
    identity = _teacher_identity(teacher_config, teacher_weights, teacher_opts)
    means, sha256 = read_published_table(json_path, num_classes, dim)
    metadata = dict(identity)
    metadata.update(
        imported_metadata(
            json_path,
            sha256,
            _SOURCE_FORMAT,
            "the reference code averaged the teacher embeddings of the RoIs its "
            "ROI head sampled in training (see docs/class_means.md)",
        ),
        background_row=num_classes,
        embedding="teacher box head output (RoI embeddings)",
        class_names=_coco_class_names(num_classes),
    )
    table = ClassMeans(means, torch.ones(num_classes + 1, dtype=torch.int64), metadata)
    save_class_means(output, table)
    return output, table


# ---------------------------------------------------------------------- command line
