"""The distillation terms of both tasks, in one registry (torch + fvcore, never detectron2).

A term is a small module registered under its config name; the task builds it as
``Term(context, **params)``, ``params`` being the term's config node with lower-case keys
(detection: ``MODEL.DISTILL.<NAME>``; classification: ``distill.<name>``) and ``context`` what
the task knows of its two models (:class:`TermContext`).  ``term(inputs)`` takes one training
step's :class:`DistillInputs` and returns the weighted loss.  DistillRCNN
(:mod:`nd_det.modeling.distill_terms` configures them from ``MODEL.DISTILL``) and the
classification distiller (:mod:`nd_det.classification.distiller`) both use them.
"""

from . import dist, dkd, kd, nd, reviewkd  # noqa: F401  (registration)
from .inputs import DistillInputs
from .nd import NDTerm
from .term import (
    DISTILL_TERM_REGISTRY,
    DistillTerm,
    TermContext,
    available_distill_terms,
    build_distill_terms,
    check_term_names,
    register_distill_term,
    terms_with_modules,
)

__all__ = [
    "DistillInputs",
    "DistillTerm",
    "TermContext",
    "DISTILL_TERM_REGISTRY",
    "register_distill_term",
    "available_distill_terms",
    "build_distill_terms",
    "check_term_names",
    "terms_with_modules",
    "NDTerm",
]
