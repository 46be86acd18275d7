"""nd-det: distill detectron2 detectors (and classifiers) with the ND loss.

``nd_det.add_distill_config`` and ``nd_det.DistillRCNN`` load the detection side on first use,
which registers the ``DistillRCNN`` meta-architecture and the student backbones in detectron2's
registries (importing ``nd_det.modeling`` does the same).  The loss core, ``nd_det.losses``, and
the classification package, ``nd_det.classification``, need only torch: importing them never
imports detectron2.
"""
import importlib

__version__ = "0.1.0"

__all__ = ["add_distill_config", "DistillRCNN", "__version__"]

_LAZY = {"add_distill_config": "nd_det.config", "DistillRCNN": "nd_det.modeling"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nd_det' has no attribute {name!r}")
