"""Classifiers returning :class:`~nd_det.classification.outputs.ClassifierOutput`.

Importing this package registers every model; build one with ``build_classifier(name, ...)``.
"""

from . import (  # noqa: F401  (imported to register the models)
    cifar_bottleneck_resnet,
    cifar_resnet,
    mobilenet_v1,
    mobilenet_v2_cifar,
    shufflenet_v1,
    shufflenet_v2,
    torchvision_regnet,
    torchvision_resnet,
    vision_transformers,
    wide_resnet,
)
from .base import Classifier
from .registry import (
    available_classifiers,
    build_classifier,
    classifier_info,
    register_classifier,
)

__all__ = [
    "Classifier",
    "build_classifier",
    "available_classifiers",
    "classifier_info",
    "register_classifier",
]
