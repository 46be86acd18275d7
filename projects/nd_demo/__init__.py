"""The embedded demo: train a teacher, distil a student, compare, all offline on the CPU.

``tools/demo.py`` is the command line; :func:`run_demo` (``nd_det.demo.pipeline``) the steps.
"""
import warnings

from nd_det.utils.import_warnings import ignore_detectron2_import_warnings

with warnings.catch_warnings():
    ignore_detectron2_import_warnings()
    from .configs import DISTILL_METHODS
    from .pipeline import OUTPUT_FILES, DemoOptions, DemoResult, run_demo

__all__ = ["run_demo", "DemoOptions", "DemoResult", "DISTILL_METHODS",
           "OUTPUT_FILES"]
