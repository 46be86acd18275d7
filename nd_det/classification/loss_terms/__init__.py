"""Loss terms of the classification distiller, chosen by name from the config."""

from . import cross_entropy, logit_distillation, nd, reviewkd  # noqa: F401  (registration)
from .base import LossTerm, TermContext
from .registry import (
    available_loss_terms,
    build_loss_terms,
    check_loss_terms,
    loss_term_class,
    register_loss_term,
)

__all__ = [
    "LossTerm",
    "TermContext",
    "build_loss_terms",
    "check_loss_terms",
    "available_loss_terms",
    "register_loss_term",
    "loss_term_class",
]
