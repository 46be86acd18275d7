"""The teacher: :class:`FrozenTeacher` is the one entry (frozen.py); its parts, one idea per
file: where its config comes from and how it is built (source.py, yacs or LazyConfig), which box
head of a Cascade it uses (box_stage.py), whether it can take the student's image size
(input_size.py), and its weights file and identity (weights.py)."""

from .frozen import FrozenTeacher, TeacherNeeds, TeacherOutputs
from .weights import resolve_teacher_weights, teacher_identity

__all__ = [
    "FrozenTeacher",
    "TeacherNeeds",
    "TeacherOutputs",
    "resolve_teacher_weights",
    "teacher_identity",
]
