"""Classifiers by name: ``build_classifier("resnet32x4", num_classes=100)``."""

import importlib.util
from dataclasses import dataclass
from typing import Callable

from ...errors import ConfigError, MissingDependencyError
from ...utils.registry import Registry, lookup, register_as, registered_names
from .base import Classifier

__all__ = [
    "CLASSIFIER_REGISTRY",
    "register_classifier",
    "build_classifier",
    "available_classifiers",
    "classifier_info",
]

CLASSIFIER_REGISTRY = Registry("CLASSIFIER")


@dataclass(frozen=True)
class ClassifierEntry:
    builder: Callable[..., Classifier]
    family: str  # "cifar" (32x32 designs), "imagenet" (224x224 CNNs) or "vit"
    description: str
    options: tuple[str, ...] = ()  # build options it takes: image_size, drop_path_rate
    requires: str = ""  # an optional package it needs (imported when built)


def register_classifier(
    name: str, family: str, description: str, options: tuple[str, ...] = (), requires: str = ""
):
    """Decorator registering ``builder(num_classes, in_channels, **options) -> Classifier``
    under ``name``."""

    def wrap(builder):
        # the registry holds the whole entry: fvcore keeps one object per name, and a builder
        # alone would not carry its family, description, options and requirement
        register_as(
            CLASSIFIER_REGISTRY,
            name,
            ClassifierEntry(builder, family, description, options, requires),
            "classifier",
        )
        return builder

    return wrap


def available_classifiers() -> list[str]:
    return registered_names(CLASSIFIER_REGISTRY)


def classifier_info(name: str) -> ClassifierEntry:
    return lookup(CLASSIFIER_REGISTRY, name, f"classifier {name!r}")


def build_classifier(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 224,
    drop_path_rate: float = 0.0,
) -> Classifier:
    """A randomly initialised classifier (``image_size``: the input size, for the models whose
    weights depend on it; ``drop_path_rate``: stochastic depth, for those that have it).  An
    unknown name raises ``ConfigError`` (a ``KeyError`` and a ``UserError``) listing the known
    names."""
    entry = classifier_info(name)
    if entry.requires and importlib.util.find_spec(entry.requires) is None:
        raise MissingDependencyError(
            f"classifier {name!r} needs {entry.requires}: pip install 'nd-det[{entry.requires}]'"
        )
    if drop_path_rate and "drop_path_rate" not in entry.options:
        raise ConfigError(f"model.drop_path_rate {drop_path_rate}: {name!r} has none; set it to 0")
    options = {"image_size": image_size, "drop_path_rate": drop_path_rate}
    return entry.builder(
        num_classes=num_classes, in_channels=in_channels, **{k: options[k] for k in entry.options}
    )
