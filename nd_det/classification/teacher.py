"""The teacher of a distillation config, and the class means that must belong to it."""

from ..class_means import ClassMeans, load_class_means, metadata_mismatches
from ..errors import ConfigError, DataError
from .checkpoint import file_sha256, load_weights
from .data import DatasetInfo
from .models import Classifier, build_classifier

__all__ = ["build_teacher", "class_means_metadata", "load_teacher_class_means"]


def build_teacher(cfg, info: DatasetInfo) -> tuple[Classifier, str]:
    """``(teacher with its weights, sha256 of its weights file)`` of ``distill.teacher``."""
    name, weights = cfg.distill.teacher.name, cfg.distill.teacher.weights
    if not (name and weights):
        raise ConfigError(
            f"distill.losses {list(cfg.distill.losses)} need a teacher: set distill.teacher.name "
            "and distill.teacher.weights (the model_final.pth of its training run)"
        )
    # randomly initialised first: the terms built next draw their initial values after these
    teacher = build_classifier(name, info.num_classes, info.in_channels, info.image_size)
    load_weights(teacher, weights, "distill.teacher.weights")
    return teacher, file_sha256(weights)


def class_means_metadata(
    teacher_name: str, teacher_weights: str, weights_sha256: str, teacher_config, dataset: str
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


def load_teacher_class_means(cfg, teacher: Classifier, weights_sha256: str) -> ClassMeans:
    """``distill.class_means``, of the teacher's shape and made with its weights and dataset."""
    path = cfg.distill.class_means
    if not path:
        raise ConfigError(
            "distill.class_means is empty: ND needs the teacher's class means, made by "
            "tools/extract_class_means.py --task classification"
        )
    table = load_class_means(path, teacher.num_classes, teacher.embedding_dim)
    expected = {
        "teacher_model": cfg.distill.teacher.name,
        "teacher_weights_sha256": weights_sha256,
        "dataset": cfg.data.name,
    }
    problems = metadata_mismatches(table, expected)
    if problems:
        raise DataError(
            f"distill.class_means {path} was not made with this teacher/dataset "
            f"({'; '.join(problems)}): re-extract it for distill.teacher.weights"
        )
    return table
