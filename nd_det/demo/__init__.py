"""The embedded demo: train a teacher, distil a student, compare, all offline on the CPU.

``tools/demo.py`` is the command line; :func:`run_demo` (``nd_det.demo.pipeline``) the steps.
"""
import warnings

with warnings.catch_warnings():
    # detectron2 / fvcore call torch.jit.script at import time, which this torch deprecates:
    # noise on the demo's console that no user can act on
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.script")
    from .configs import DISTILL_METHODS, DemoConfigError
    from .pipeline import OUTPUT_FILES, DemoOptions, DemoResult, run_demo

__all__ = ["run_demo", "DemoOptions", "DemoResult", "DemoConfigError", "DISTILL_METHODS",
           "OUTPUT_FILES"]
