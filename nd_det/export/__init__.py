"""Deploying the student alone: a plain detectron2 config + student-only weights
(:func:`export_student`, ``tools/export_student.py``)."""
from .student import EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, StudentExport, export_student

__all__ = ["EXPORT_CONFIG_NAME", "EXPORT_WEIGHTS_NAME", "StudentExport",
           "export_student"]
