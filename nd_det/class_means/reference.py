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

from ..errors import DataError, input_stage
from ..utils.paths import check_overwrite, check_writable
from ..utils.text import first_line, short_list
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

    with input_stage(f"--teacher-config {teacher_config!r} (a file or a model-zoo name)"):
        model_zoo.get_config_file(teacher_config)
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
            f"--teacher-config {teacher_config!r} is not a model-zoo config with known weights: "
            "give --teacher-weights (the training config's MODEL.DISTILL.TEACHER_WEIGHTS)"
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
class _Bad(Exception):
    """What keeps a JSON table from being read (the reader names the file)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    table = dict(pairs)
    if len(table) != len(pairs):
        raise _Bad("a class index appears twice as a key; each class has one row")
    return table


def read_published_table(
    path: str,
    num_classes: int = DEFAULT_NUM_CLASSES,
    dim: int = DEFAULT_DIM,
    background: bool = True,
) -> tuple[torch.Tensor, str]:
    """The (num_classes + 1, dim) float32 table of a JSON like the reference's (num_classes
    rows without ``background``), and the file's sha256; one DataError naming the file and
    the problem otherwise."""
    keys = [str(k) for k in range(num_classes + int(background))]
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
        table = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
        if sorted(table) != sorted(keys):
            missing, extra = sorted(set(keys) - set(table)), sorted(set(table) - set(keys), key=str)
            raise _Bad(
                f'keys must be "0".."{keys[-1]}"{" (background last)" * background}: missing '
                f"{short_list(missing, 5) or 'none'}, unexpected {short_list(extra, 5) or 'none'}"
                f" ({len(table)} rows: --num-classes {len(table) - int(background)}?)"
            )
        means = torch.tensor([table[k] for k in keys], dtype=torch.float64).float()
        if means.shape[1:] != (dim,):
            raise _Bad(f"its rows have shape {tuple(means.shape[1:])} but --dim is {dim}")
    except (_Bad, OSError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        why = str(e) if isinstance(e, _Bad) else f"{first_line(e)}; the format: {_SOURCE_FORMAT}"
        raise DataError(f"--input {path}: {why}") from None
    bad = torch.nonzero(~torch.isfinite(means).all(dim=1)).flatten().tolist()
    bad += directionless_rows(means)
    if bad:
        raise DataError(
            f"--input {path}: row(s) {short_list(bad, 10)} are NaN/inf or all zeros (ND needs a "
            "direction for every class)"
        )
    return means, hashlib.sha256(raw).hexdigest()


def _coco_class_names(num_classes: int) -> list[str]:
    if num_classes != DEFAULT_NUM_CLASSES:
        return []
    from detectron2.data import MetadataCatalog  # detectron2's built-in COCO metadata

    return list(MetadataCatalog.get("coco_2017_train").thing_classes) + ["background"]


def check_output(output: str, overwrite: bool = False) -> None:
    """``--output`` names a torch file that can be written (an existing one: with
    ``overwrite``)."""
    if str(output).lower().endswith(".json"):
        raise DataError(f"--output {output}: a class-means file is a torch file: give a .pth path")
    check_writable(output, "--output")
    check_overwrite(output, "--output", overwrite)


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
    overwrite: bool = False,
) -> tuple[str, ClassMeans]:
    """Check ``json_path`` and write it to ``output`` (default :func:`default_output`; an
    existing file only with ``overwrite``) in nd-det's class-means format for the given teacher
    (``teacher_weights`` None: the model-zoo weights of ``teacher_config``).  Everything is
    checked before anything is written.  Returns (the path written, the table)."""
    output = output or default_output(teacher_config)
    check_output(output, overwrite)
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
