"""The teacher: :class:`FrozenTeacher` is the one entry (frozen.py); its parts, one idea per
file: where its config comes from and how it is built (source.py, yacs or LazyConfig), which box
head of a Cascade it uses (box_stage.py), whether it can take the student's image size
(input_size.py), its weights file and identity (weights.py), and the plain values it is built
from, a yacs config's or a LazyConfig's (spec.py)."""

from .frozen import FrozenTeacher, TeacherNeeds, TeacherOutputs
from .spec import TeacherSpec
from .weights import resolve_teacher_weights, teacher_identity

__all__ = [
    "FrozenTeacher",
    "TeacherNeeds",
    "TeacherOutputs",
    "TeacherSpec",
    "resolve_teacher_weights",
    "teacher_identity",
]
