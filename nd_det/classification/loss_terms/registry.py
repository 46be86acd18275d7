"""Loss terms by name, built from a config's ``distill.losses`` mapping::

losses:
  ce: {weight: 1.0}
  kd: {weight: 1.0, temperature: 4.0}
  nd: {weight: 2.0}
"""

import inspect
from collections.abc import Mapping
from typing import Any, Optional

from torch import nn

from ...errors import ConfigError
from ...utils.registry import Registry, lookup, register_as, registered_names
from ...utils.values import is_int, is_number
from .base import LossTerm, TermContext

__all__ = [
    "LOSS_TERM_REGISTRY",
    "register_loss_term",
    "build_loss_terms",
    "available_loss_terms",
    "check_loss_terms",
    "loss_term_class",
]

LOSS_TERM_REGISTRY = Registry("LOSS_TERM")


def register_loss_term(cls: type[LossTerm]) -> type[LossTerm]:
    """Class decorator: registers a LossTerm under its ``name`` (the config key)."""
    register_as(LOSS_TERM_REGISTRY, cls.name, cls, f"loss term (class {cls.__name__})")
    return cls


def available_loss_terms() -> list[str]:
    return registered_names(LOSS_TERM_REGISTRY)


def loss_term_class(name: str) -> type[LossTerm]:
    """The registered term ``name``; an unknown name is a ConfigError listing the known."""
    return lookup(LOSS_TERM_REGISTRY, name, f"loss term {name!r} in distill.losses")


def _parameters(cls: type[LossTerm]) -> dict[str, Any]:
    """The term's config parameters and their defaults (``inspect.Parameter.empty`` if none)."""
    return {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "context")
    }


_PARAMETER_KINDS = (
    (bool, lambda v: isinstance(v, bool), "true or false"),
    (int, is_int, "an integer"),
    (float, is_number, "a number"),
    (str, lambda v: isinstance(v, str), "a string"),
)


def _check_parameter(term: str, cls: type[LossTerm], key: str, value, default) -> None:
    """Type (that of the default), then the class's declared ranges and choices."""
    where = f"distill.losses.{term}.{key}={value!r}"
    if key == "warm_up" and value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true, false or null (the term's default)")
    # the first type the default is an instance of (bool before int); no default or None: the
    # term checks the value itself
    for kind, fits, text in _PARAMETER_KINDS:
        if isinstance(default, kind):
            if not fits(value):
                raise ConfigError(f"{where} must be {text} (the default is {default!r})")
            break
    if key in cls.positive_params and not value > 0:
        hint = (
            f"; to train without '{term}', remove it from distill.losses" if key == "weight" else ""
        )
        raise ConfigError(f"{where}: give a positive value{hint}")
    if key in cls.fraction_params and not 0 <= value < 1:
        raise ConfigError(f"{where}: give a value in [0, 1)")
    choices = cls.param_choices.get(key)
    if choices and value not in choices:
        raise ConfigError(f"{where}: use one of {', '.join(map(repr, choices))}")


def check_loss_terms(losses, has_teacher: bool) -> None:
    """Every mistake in a ``distill.losses`` mapping that needs no model: an empty list, unknown
    term names, unknown parameters, values of the wrong type or range, a term that needs a
    teacher without one."""
    if not isinstance(losses, Mapping) or not losses:
        raise ConfigError(
            "distill.losses is empty: list at least one loss term, e.g. ce: {weight: 1.0}"
        )
    for name, params in losses.items():
        cls = loss_term_class(name)
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(
                f"distill.losses.{name} must be a mapping of parameters (or null); got {params!r}"
            )
        params = dict(params or {})
        allowed = _parameters(cls)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(
                f"loss term {name!r} has no parameter(s) {', '.join(unknown)}; "
                f"its parameters are: {', '.join(allowed)}"
            )
        if cls.needs_teacher and not has_teacher:
            raise ConfigError(
                f"loss term {name!r} needs a teacher: set distill.teacher.name and "
                "distill.teacher.weights, or remove the term"
            )
        for key, value in params.items():
            _check_parameter(name, cls, key, value, allowed[key])


def build_loss_terms(
    losses: Mapping[str, Optional[Mapping]], context: TermContext
) -> nn.ModuleDict:
    """One module per entry of ``losses`` (name -> parameters), in the mapping's order."""
    check_loss_terms(losses, context.teacher is not None)
    terms = nn.ModuleDict()
    for name, params in losses.items():
        terms[name] = loss_term_class(name)(context, **dict(params or {}))
    return terms
