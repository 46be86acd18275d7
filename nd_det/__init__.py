"""nd-det: distill detectron2 detectors (and classifiers) with the ND loss.

Importing ``nd_det`` registers the ``DistillRCNN`` meta-architecture and the student backbones
in detectron2's registries.  The loss core, ``nd_det.losses``, and the classification package,
``nd_det.classification``, need only torch: where detectron2 is not installed they still import
(and the detection names below are simply absent).
"""
__version__ = "0.1.0"

try:
    import detectron2  # noqa: F401
except ImportError:  # torch-only use: nd_det.losses / nd_det.classification
    __all__ = ["__version__"]
else:
    from .config import add_distill_config
    from .modeling import DistillRCNN

    __all__ = ["add_distill_config", "DistillRCNN", "__version__"]
