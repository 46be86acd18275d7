"""Classifiers by name: ``build_classifier("resnet32x4", num_classes=100)``."""
from dataclasses import dataclass
from typing import Callable, Dict, List

from .base import Classifier

__all__ = ["register_classifier", "build_classifier", "available_classifiers", "classifier_info"]


@dataclass(frozen=True)
class ClassifierEntry:
    builder: Callable[..., Classifier]
    family: str          # "cifar" (32x32 designs) or "imagenet" (224x224 designs)
    description: str


_REGISTRY: Dict[str, ClassifierEntry] = {}


def register_classifier(name: str, family: str, description: str):
    """Decorator registering ``builder(num_classes, in_channels) -> Classifier`` under ``name``."""

    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"classifier {name!r} is registered twice")
        _REGISTRY[name] = ClassifierEntry(builder, family, description)
        return builder

    return wrap


def available_classifiers() -> List[str]:
    return sorted(_REGISTRY)


def classifier_info(name: str) -> ClassifierEntry:
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown classifier {name!r}; available: {', '.join(available_classifiers())}"
        )
    return _REGISTRY[name]


def build_classifier(name: str, num_classes: int, in_channels: int = 3) -> Classifier:
    """A randomly initialised classifier.  Raises ``KeyError`` listing the known names."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    return classifier_info(name).builder(num_classes=num_classes, in_channels=in_channels)
