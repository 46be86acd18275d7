"""Classifiers by name: ``build_classifier("resnet32x4", num_classes=100)``."""
from dataclasses import dataclass
from typing import Callable, List

from ...errors import ConfigError
from ...utils.registry import Registry, register_as, registered_names
from ...utils.registry import lookup
from .base import Classifier

__all__ = ["CLASSIFIER_REGISTRY", "register_classifier", "build_classifier",
           "available_classifiers", "classifier_info", "check_classifier_name"]

CLASSIFIER_REGISTRY = Registry("CLASSIFIER")


@dataclass(frozen=True)
class ClassifierEntry:
    builder: Callable[..., Classifier]
    family: str          # "cifar" (32x32 designs) or "imagenet" (224x224 designs)
    description: str


def register_classifier(name: str, family: str, description: str):
    """Decorator registering ``builder(num_classes, in_channels) -> Classifier`` under ``name``."""

    def wrap(builder):
        # the registry holds the whole entry: fvcore keeps one object per name, and a builder
        # alone would not carry its family and description
        register_as(CLASSIFIER_REGISTRY, name, ClassifierEntry(builder, family, description),
                    "classifier")
        return builder

    return wrap


def available_classifiers() -> List[str]:
    return registered_names(CLASSIFIER_REGISTRY)


def classifier_info(name: str) -> ClassifierEntry:
    return lookup(CLASSIFIER_REGISTRY, name, f"classifier {name!r}")


def check_classifier_name(name, key: str) -> None:
    """A config's classifier name (``key``: the config key that gave it) must be registered."""
    if not name:
        raise ConfigError(f"{key} is empty: name a classifier, e.g. resnet20; available: "
                          f"{', '.join(available_classifiers())}")
    lookup(CLASSIFIER_REGISTRY, name, f"classifier {key}={name!r}")


def build_classifier(name: str, num_classes: int, in_channels: int = 3) -> Classifier:
    """A randomly initialised classifier.  An unknown name raises ``ConfigError`` (a
    ``KeyError`` and a ``UserError``) listing the known names."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    return classifier_info(name).builder(num_classes=num_classes, in_channels=in_channels)
