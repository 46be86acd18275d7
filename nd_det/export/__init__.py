"""Deploying the student alone: a plain detectron2 config + student-only weights
(:func:`export_student`, ``tools/export_student.py``), and from that folder one deploy file
(``tools/export_model.py``: :mod:`.formats` over :mod:`.program` (torch.export, ``.pt2``),
:mod:`.onnx_export` (``.onnx``) and :mod:`.torchscript` (legacy), sharing :mod:`.contract`; the
exported graph is :mod:`.graph` or :mod:`.dense_graph`, picked by :mod:`.exportable`, with
:mod:`.postprocess`)."""

from .student import EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, StudentExport, export_student

__all__ = ["EXPORT_CONFIG_NAME", "EXPORT_WEIGHTS_NAME", "StudentExport", "export_student"]
