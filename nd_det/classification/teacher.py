"""The teacher of a distillation config, and the class means that must belong to it."""
from typing import Dict, Optional, Tuple

from ..losses import ClassMeans, load_class_means, metadata_mismatches
from ..utils.modules import freeze
from .checkpoint import file_sha256, load_model_weights
from .data import DatasetInfo
from .models import Classifier, build_classifier

__all__ = ["build_teacher", "load_teacher_class_means", "class_means_metadata"]


def build_teacher(teacher_cfg: Dict, info: DatasetInfo) -> Tuple[Optional[Classifier], Optional[str]]:
    """``(frozen teacher, sha256 of its weights file)``, or ``(None, None)`` without a teacher."""
    name = teacher_cfg.get("name")
    if not name:
        return None, None
    weights = teacher_cfg.get("weights")
    if not weights:
        raise ValueError(
            f"distill.teacher.weights is empty for teacher {name!r}: distillation needs a trained "
            "teacher. Train one with tools/train_cls.py --config <teacher config> and point "
            "distill.teacher.weights at its model_final.pth."
        )
    teacher = build_classifier(name, info.num_classes, info.in_channels)
    load_model_weights(teacher, weights, what="teacher")
    return freeze(teacher), file_sha256(weights)


def class_means_metadata(teacher_name: str, teacher_weights: str, weights_sha256: str,
                         teacher_config: Optional[str], dataset: str) -> Dict:
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


def load_teacher_class_means(path: Optional[str], teacher: Classifier, teacher_name: str,
                             weights_sha256: str, dataset: str) -> ClassMeans:
    if not path:
        raise ValueError("loss term 'nd' needs distill.class_means: make the file with "
                         "tools/extract_cls_means.py --config <teacher config> --weights <teacher>")
    table = load_class_means(path, num_classes=teacher.num_classes, dim=teacher.embedding_dim)
    expected = {"teacher_model": teacher_name, "teacher_weights_sha256": weights_sha256,
                "dataset": dataset}
    problems = metadata_mismatches(table, expected)
    if problems:
        raise ValueError(
            f"class means {path} were not made with this teacher/dataset ({'; '.join(problems)}). "
            "Re-extract them with tools/extract_cls_means.py for distill.teacher.weights."
        )
    return table
