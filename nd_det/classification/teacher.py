"""The teacher of a distillation config, and the class means that must belong to it."""

from typing import Optional

from ..class_means import ClassMeans, load_class_means, metadata_mismatches
from ..errors import ConfigError, DataError
from ..utils.modules import freeze
from .checkpoint import check_weights_file, file_sha256, load_model_weights
from .data import DatasetInfo
from .models import Classifier, build_classifier, check_classifier_name

__all__ = [
    "build_teacher",
    "check_teacher_config",
    "load_teacher_class_means",
    "read_class_means_file",
    "class_means_metadata",
]


def check_teacher_config(teacher_cfg: dict) -> None:
    """``distill.teacher`` names a registered classifier and an existing weights file, or no
    teacher at all (checked without building anything)."""
    name, weights = teacher_cfg.get("name"), teacher_cfg.get("weights")
    if not name:
        if weights:
            raise ConfigError(
                f"distill.teacher.weights is set ({weights}) but distill.teacher.name is empty, "
                "so no teacher would be used: set distill.teacher.name to the teacher's "
                "classifier, or remove the weights"
            )
        return
    check_classifier_name(name, "distill.teacher.name")
    if not weights:
        raise ConfigError(
            f"distill.teacher.weights is empty for teacher {name!r}: distillation needs a trained "
            "teacher. Train one with tools/train_cls.py --config <teacher config> and point "
            "distill.teacher.weights at its model_final.pth."
        )
    check_weights_file(weights, "teacher", "distill.teacher.weights")


def build_teacher(
    teacher_cfg: dict, info: DatasetInfo
) -> tuple[Optional[Classifier], Optional[str]]:
    """``(frozen teacher, sha256 of its weights file)``, or ``(None, None)`` without a teacher."""
    check_teacher_config(teacher_cfg)
    name, weights = teacher_cfg.get("name"), teacher_cfg.get("weights")
    if not name:
        return None, None
    teacher = build_classifier(name, info.num_classes, info.in_channels, info.image_size)
    load_model_weights(teacher, weights, what="teacher", key="distill.teacher.weights")
    return freeze(teacher), file_sha256(weights)


def class_means_metadata(
    teacher_name: str,
    teacher_weights: str,
    weights_sha256: str,
    teacher_config: Optional[str],
    dataset: str,
) -> dict:
    """The metadata written into (and later checked against) a classification class-means file."""
    return {
        "teacher_model": teacher_name,
        "teacher_weights": teacher_weights,
        "teacher_weights_sha256": weights_sha256,
        "teacher_config": teacher_config,
        "dataset": dataset,
        "split": "train",
        "task": "classification",
    }


def read_class_means_file(
    path: Optional[str], num_classes: Optional[int] = None, dim: Optional[int] = None
) -> ClassMeans:
    """The class-means file ``distill.class_means`` names (its shape checked when ``num_classes``
    / ``dim`` are given); errors name the key."""
    if not path:
        raise ConfigError(
            "loss term 'nd' needs distill.class_means: make the file with tools/"
            "extract_class_means.py --task classification --config <teacher config> "
            "--weights <teacher>"
        )
    try:
        return load_class_means(path, num_classes=num_classes, dim=dim)
    except DataError as e:  # the same error, naming the config key the file came from
        raise DataError(f"distill.class_means: {e}") from None


def load_teacher_class_means(
    path: Optional[str], teacher: Classifier, teacher_name: str, weights_sha256: str, dataset: str
) -> ClassMeans:
    table = read_class_means_file(path, teacher.num_classes, teacher.embedding_dim)
    expected = {
        "teacher_model": teacher_name,
        "teacher_weights_sha256": weights_sha256,
        "dataset": dataset,
    }
    problems = metadata_mismatches(table, expected)
    if problems:
        raise DataError(
            f"distill.class_means: class means {path} were not made with this teacher/dataset "
            f"({'; '.join(problems)}). "
            "Re-extract them with tools/extract_class_means.py --task classification for "
            "distill.teacher.weights."
        )
    return table
