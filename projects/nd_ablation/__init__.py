"""The ablation (``tools/ablation.py``; protocol in docs/ablation.md): what the ND loss adds to
each distillation method (X vs X++), over several seeds, on data that installs offline, and the
embedding geometry ND acts on.  Uses the public names of ``nd_det``, ``nd_common`` and
``nd_det.classification``."""

from .runner import DOMAINS, OUTPUT_FILES, AblationOptions, run_ablation

__all__ = ["AblationOptions", "run_ablation", "DOMAINS", "OUTPUT_FILES"]
