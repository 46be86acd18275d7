"""Build the pieces of a run from its config: student, teacher, distillation terms, distiller."""

from torch import nn

from ..distill import (
    DISTILL_TERM_REGISTRY,
    TermContext,
    available_distill_terms,
    build_distill_terms,
)
from ..errors import ConfigError
from .checkpoint import load_weights
from .data import DatasetInfo, mixes_labels
from .distiller import Distiller
from .models import Classifier, build_classifier
from .teacher import build_teacher, load_teacher_class_means

__all__ = ["build_student", "build_distiller", "build_terms", "term_context"]


def build_student(cfg, info: DatasetInfo) -> Classifier:
    """``model.name`` for the dataset, with ``model.weights`` when set."""
    m = cfg.model
    model = build_classifier(
        m.name, info.num_classes, info.in_channels, info.image_size, m.drop_path_rate
    )
    load_weights(model, m.weights)  # nothing when empty
    return model


def term_context(student: Classifier, teacher: Classifier, class_means=None) -> TermContext:
    """What the distillation terms know of a classifier pair: embedding widths, the stage maps
    by index (shallow to deep, the embedding last) and the class means."""
    return TermContext(
        config_prefix="distill",
        student_embedding_dim=student.embedding_dim,
        teacher_embedding_dim=teacher.embedding_dim,
        student_levels=dict(enumerate(student.feature_channels)),
        teacher_levels=dict(enumerate(teacher.feature_channels)),
        class_means=class_means,
        num_classes=student.num_classes,
        embedding_key="model.name",
    )


def build_distiller(cfg, info: DatasetInfo) -> tuple[Distiller, dict]:
    """The distiller (student + frozen teacher + terms) and provenance facts for checkpoints."""
    student, names = build_student(cfg, info), list(cfg.distill.losses)
    if not names:
        return Distiller(student, None, nn.ModuleDict(), 0, cfg.model.label_smoothing), {}
    hard = [
        n
        for n in names
        if n in DISTILL_TERM_REGISTRY and DISTILL_TERM_REGISTRY.get(n).needs_hard_labels
    ]
    if hard and mixes_labels(cfg.data):
        raise ConfigError(
            f"distill.losses {hard[0]!r} needs each image's own label, but data.mixup_alpha / "
            f"data.cutmix_alpha mix the labels: set both to 0 or remove {hard[0]!r}"
        )
    teacher, sha = build_teacher(cfg, info)
    means = load_teacher_class_means(cfg, teacher, sha).means if "nd" in names else None
    terms = build_terms(cfg, student, teacher, means)
    distiller = Distiller(
        student, teacher, terms, cfg.distill.warm_up_epochs, cfg.model.label_smoothing
    )
    return distiller, {"teacher_weights_sha256": sha}


def build_terms(cfg, student: Classifier, teacher: Classifier, class_means=None) -> nn.ModuleDict:
    """The terms ``distill.losses`` names, each from its node ``distill.<name>``, by name."""
    names = list(cfg.distill.losses)
    nodes = {n: cfg.distill[n] for n in available_distill_terms() if n in cfg.distill}
    terms = build_distill_terms(names, nodes, term_context(student, teacher, class_means))
    return nn.ModuleDict(zip(names, terms))
