"""The ablation: what ND adds to each distillation method (X vs X++), measured over several
seeds on data that installs offline (``tools/ablation.py``; protocol in docs/ablation.md).

An application of the library: it uses the public names of ``nd_det``, ``nd_det.demo`` and
``nd_det.classification`` only.
"""
from .plan import CLASSIFICATION_METHODS, DETECTION_METHODS, PAIRS, Method, Sizes
from .runner import DOMAINS, OUTPUT_FILES, AblationOptions, run_ablation

__all__ = ["AblationOptions", "run_ablation", "DOMAINS", "OUTPUT_FILES", "DETECTION_METHODS",
           "CLASSIFICATION_METHODS", "PAIRS", "Method", "Sizes"]
