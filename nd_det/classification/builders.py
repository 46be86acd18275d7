"""Build the pieces of a run from a checked config: student, teacher, distiller."""

from ..errors import ConfigError
from .checkpoint import load_model_weights
from .data import DatasetInfo
from .distiller import Distiller
from .loss_terms import TermContext, build_loss_terms
from .models import Classifier, build_classifier
from .teacher import build_teacher, load_teacher_class_means

__all__ = ["build_student", "build_distiller"]


def build_student(cfg: dict, info: DatasetInfo) -> Classifier:
    name = cfg["model"]["name"]
    if not name:
        raise ConfigError(
            "model.name is empty: name a classifier, e.g. resnet20 "
            "(see nd_det.classification.models.available_classifiers())"
        )
    model = build_classifier(
        name,
        info.num_classes,
        info.in_channels,
        info.image_size,
        float(cfg["model"].get("drop_path_rate", 0.0)),
    )
    if cfg["model"].get("weights"):
        load_model_weights(model, cfg["model"]["weights"], what="initial", key="model.weights")
    return model


def build_distiller(cfg: dict, info: DatasetInfo) -> tuple[Distiller, dict]:
    """The distiller (student + frozen teacher + loss terms) and provenance facts for the log."""
    student = build_student(cfg, info)
    distill = cfg["distill"]
    teacher, teacher_sha = build_teacher(distill["teacher"], info)
    class_means = None
    if teacher is not None and "nd" in distill["losses"]:
        class_means = load_teacher_class_means(
            distill.get("class_means"),
            teacher,
            distill["teacher"]["name"],
            teacher_sha,
            cfg["data"]["name"],
        )
    terms = build_loss_terms(distill["losses"], TermContext(student, teacher, class_means))
    facts = {"teacher_weights_sha256": teacher_sha} if teacher_sha else {}
    return Distiller(student, teacher, terms, distill.get("warm_up_epochs", 0)), facts
