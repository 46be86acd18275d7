"""nd-det: distill detectron2 detectors (and classifiers) with the ND loss.

As with a detectron2 project (``import point_rend``)::

    import nd_det
    cfg = get_cfg()
    nd_det.add_distill_config(cfg)
    model = detectron2.modeling.build_model(cfg)   # a DistillRCNN

The first use of ``nd_det.add_distill_config`` or ``nd_det.DistillRCNN`` imports the detection
side (``nd_det.modeling``), which registers the ``DistillRCNN`` meta-architecture and the
student backbones in detectron2's registries.  ``import nd_det`` alone imports nothing heavy:
the loss core, ``nd_det.losses``, and the classification package, ``nd_det.classification``,
need only torch and never import detectron2.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["add_distill_config", "DistillRCNN", "__version__"]

_LAZY = {"add_distill_config": "nd_det.config", "DistillRCNN": "nd_det.modeling"}


def __getattr__(name):
    if name in _LAZY:
        importlib.import_module("nd_det.modeling")  # registers DistillRCNN and the backbones
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nd_det' has no attribute {name!r}")
