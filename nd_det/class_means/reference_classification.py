"""Import the reference code's classification class-mean tables (its
``CIFAR/*/ckpt/teacher/*/center_emb_train.json``, ``ImageNet/ckpt/teacher/*/...``,
``ImageNet/ViT/ckpt/*/...``): ``{"0": [D numbers], ..., "C-1": [...]}``, one row per class in any
key order, no background row, values rounded to 4 decimals, no sample counts.

The JSON is read and checked by the detection importer's reader
(:func:`nd_det.class_means.reference.read_published_table`, without a background row) and written
in the one class-means format, tied to the teacher weights file by its sha256 with the metadata
``tools/extract_class_means.py --task classification`` writes, so a training config whose
``distill.teacher.name`` / ``weights`` and ``data.name`` equal the flags uses it (and refuses it
otherwise). Import a table only with the weights it was made from: the reference's ImageNet ResNet
tables come from torchvision's IMAGENET1K_V1 files. ``tools/import_class_means.py --task
classification``.
"""

import os
from typing import Optional

import torch

from ..classification.checkpoint import file_sha256
from ..classification.models import build_classifier, classifier_info
from ..classification.teacher import class_means_metadata
from ..errors import DataError, FileError
from .reference import check_output, imported_metadata, read_published_table
from .table import ClassMeans, save_class_means

__all__ = ["import_classification_class_means", "default_output", "classification_main"]

DEFAULT_NUM_CLASSES = 1000  # ImageNet
_SOURCE_FORMAT = (
    '{"0": [D numbers], ..., "C-1": [...]}: class index as a string, one row per '
    "class, no background (the reference code's center_emb_train.json)"
)


def default_output(teacher_model: str, dataset: str) -> str:
    """Where the shipped configs read the class means of ``teacher_model`` on ``dataset``."""
    folder = "imagenet" if dataset == "image_folder" else dataset
    return os.path.join(
        "output", "classification", folder, "teachers", teacher_model, "class_means.pth"
    )


def import_classification_class_means(
    json_path: str,
    teacher_model: str,
    teacher_weights: str,
    output: Optional[str] = None,
    dataset: str = "image_folder",
    num_classes: int = DEFAULT_NUM_CLASSES,
    dim: Optional[int] = None,
    teacher_config: Optional[str] = None,
    overwrite: bool = False,
) -> tuple[str, ClassMeans]:
    """Check ``json_path`` and write it to ``output`` (default :func:`default_output`) for the
    teacher ``teacher_model`` with the weights file ``teacher_weights`` (``dim`` None: the
    teacher's embedding size).  Everything is checked before anything is written."""
    classifier_info(teacher_model)  # an unknown name is one line listing the known ones
    if not os.path.isfile(teacher_weights):
        raise FileError(f"--teacher-weights {teacher_weights}: file not found")
    if dim is None:  # built on the CPU: torchvision's RegNet cannot be built on the meta device
        dim = build_classifier(teacher_model, num_classes).embedding_dim
    output = output or default_output(teacher_model, dataset)
    check_output(output, overwrite)
    means, sha256 = read_published_table(json_path, num_classes, dim, background=False)
    metadata = class_means_metadata(
        teacher_model, teacher_weights, file_sha256(teacher_weights), teacher_config, dataset
    )
    metadata.update(
        imported_metadata(
            json_path,
            sha256,
            _SOURCE_FORMAT,
            "the reference code averaged the teacher's penultimate embeddings "
            "over its training set (under its training augmentation, each "
            "value rounded to 4 decimals first)",
        ),
        embedding="teacher penultimate embedding",
        class_names=[],
    )
    table = ClassMeans(means, torch.ones(num_classes, dtype=torch.int64), metadata)
    save_class_means(output, table)
    return output, table


def classification_main(args) -> int:
    """``tools/import_class_means.py --task classification`` (``args`` from its parser)."""
    if args.teacher_model is None or args.teacher_weights is None:
        raise DataError("--task classification needs --teacher-model and --teacher-weights")
    if args.teacher_opts:
        raise DataError("--teacher-opts is a flag of --task detection")
    path, table = import_classification_class_means(
        args.input,
        args.teacher_model,
        args.teacher_weights,
        args.output,
        args.dataset or "image_folder",
        DEFAULT_NUM_CLASSES if args.num_classes is None else args.num_classes,
        args.dim,
        args.teacher_config,
        args.overwrite,
    )
    meta = table.metadata
    print(
        f"wrote {path}: {table.num_classes} x {table.dim} class means from "
        f"{meta['source_file']} (sha256 {meta['source_sha256'][:12]}...) for teacher "
        f"{meta['teacher_model']} ({meta['teacher_weights']}, sha256 "
        f"{meta['teacher_weights_sha256'][:12]}...) on {meta['dataset']}; counts unknown "
        "(stored as 1)"
    )
    return 0
