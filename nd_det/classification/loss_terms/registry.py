"""Loss terms by name, built from a config's ``distill.losses`` mapping::

    losses:
      ce: {weight: 1.0}
      kd: {weight: 1.0, temperature: 4.0}
      nd: {weight: 2.0}
"""
import inspect
from typing import List, Mapping, Optional, Type

from torch import nn

from ...utils.registry import Registry, lookup, register_as, registered_names
from .base import LossTerm, TermContext

__all__ = ["LOSS_TERM_REGISTRY", "register_loss_term", "build_loss_terms", "available_loss_terms"]

LOSS_TERM_REGISTRY = Registry("LOSS_TERM")


def register_loss_term(cls: Type[LossTerm]) -> Type[LossTerm]:
    """Class decorator: registers a LossTerm under its ``name`` (the config key)."""
    register_as(LOSS_TERM_REGISTRY, cls.name, cls, f"loss term (class {cls.__name__})")
    return cls


def available_loss_terms() -> List[str]:
    return registered_names(LOSS_TERM_REGISTRY)


def _parameters(cls: Type[LossTerm]) -> List[str]:
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "context")]
    return names


def build_loss_terms(losses: Mapping[str, Optional[Mapping]], context: TermContext) -> nn.ModuleDict:
    """One module per entry of ``losses`` (name -> parameters), in the mapping's order."""
    if not losses:
        raise ValueError("distill.losses is empty: list at least one loss term, e.g. ce: {weight: 1.0}")
    terms = nn.ModuleDict()
    for name, params in losses.items():
        cls = lookup(LOSS_TERM_REGISTRY, name, f"loss term {name!r} in distill.losses")
        params = dict(params or {})
        allowed = _parameters(cls)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise KeyError(f"loss term {name!r} has no parameter(s) {', '.join(unknown)}; its "
                           f"parameters are: {', '.join(allowed)}")
        if cls.needs_teacher and context.teacher is None:
            raise ValueError(f"loss term {name!r} needs a teacher: set distill.teacher.name and "
                             "distill.teacher.weights, or remove the term")
        terms[name] = cls(context, **params)
    return terms
