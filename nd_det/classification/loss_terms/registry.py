"""Loss terms by name, built from a config's ``distill.losses`` mapping::

    losses:
      ce: {weight: 1.0}
      kd: {weight: 1.0, temperature: 4.0}
      nd: {weight: 2.0}
"""
import inspect
from typing import Dict, List, Mapping, Optional, Type

from torch import nn

from .base import LossTerm, TermContext

__all__ = ["register_loss_term", "build_loss_terms", "available_loss_terms"]

_REGISTRY: Dict[str, Type[LossTerm]] = {}


def register_loss_term(cls: Type[LossTerm]) -> Type[LossTerm]:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"loss term class {cls.__name__} needs a unique name; got {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def available_loss_terms() -> List[str]:
    return sorted(_REGISTRY)


def _parameters(cls: Type[LossTerm]) -> List[str]:
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "context")]
    return names


def build_loss_terms(losses: Mapping[str, Optional[Mapping]], context: TermContext) -> nn.ModuleDict:
    """One module per entry of ``losses`` (name -> parameters), in the mapping's order."""
    if not losses:
        raise ValueError("distill.losses is empty: list at least one loss term, e.g. ce: {weight: 1.0}")
    terms = nn.ModuleDict()
    for name, params in losses.items():
        if name not in _REGISTRY:
            raise KeyError(f"unknown loss term {name!r} in distill.losses; available: "
                           f"{', '.join(available_loss_terms())}")
        cls = _REGISTRY[name]
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
