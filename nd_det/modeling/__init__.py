"""Detection modeling: importing this registers DistillRCNN and the student backbones."""
from . import backbone  # noqa: F401  (registers the backbones in BACKBONE_REGISTRY)
from .distill_terms import DISTILL_TERMS, DistillInputs, DistillTerm
from .meta_arch import DistillConfigError, DistillRCNN
from .teacher import TeacherError, build_teacher

__all__ = [
    "DistillRCNN", "DistillConfigError", "DistillInputs", "DistillTerm", "DISTILL_TERMS",
    "TeacherError", "build_teacher",
]
