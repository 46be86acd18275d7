"""Detection modeling: importing this registers DistillRCNN, the one-stage students
(DistillRetinaNet, DistillFCOS) and the student backbones."""

from ..distill import (
    DISTILL_TERM_REGISTRY,
    DistillInputs,
    DistillTerm,
    available_distill_terms,
    register_distill_term,
)
from . import backbone  # noqa: F401  (registers the backbones in BACKBONE_REGISTRY)
from .dense_meta_arch import DistillFCOS, DistillRetinaNet
from .distill_terms import check_distill_loss_names
from .meta_arch import DistillRCNN
from .student_checkpoint import (
    DISTILL_STATE_PREFIX,
    StrictCheckpointer,
    StudentCheckpointer,
    build_plain_student,
    is_distill_module_key,
    load_student_checkpoint,
    plain_student_cfg,
    student_state_dict,
    uses_nd_det_backbone,
)
from .teacher import (
    FrozenTeacher,
    TeacherNeeds,
    TeacherOutputs,
    resolve_teacher_weights,
    teacher_identity,
)
from .weights import local_weights_file

__all__ = [
    "DistillRCNN",
    "DistillRetinaNet",
    "DistillFCOS",
    "DistillInputs",
    "DistillTerm",
    "DISTILL_TERM_REGISTRY",
    "available_distill_terms",
    "check_distill_loss_names",
    "register_distill_term",
    "FrozenTeacher",
    "TeacherNeeds",
    "TeacherOutputs",
    "resolve_teacher_weights",
    "teacher_identity",
    "DISTILL_STATE_PREFIX",
    "StrictCheckpointer",
    "StudentCheckpointer",
    "is_distill_module_key",
    "load_student_checkpoint",
    "build_plain_student",
    "plain_student_cfg",
    "student_state_dict",
    "uses_nd_det_backbone",
    "local_weights_file",
]
