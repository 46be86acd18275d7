"""The base of every distillation term, what a task tells its terms, and the one registry."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..utils.registry import Registry, register_as, registered_names
from .inputs import DistillInputs

__all__ = [
    "DistillTerm",
    "TermContext",
    "DISTILL_TERM_REGISTRY",
    "register_distill_term",
    "available_distill_terms",
    "terms_with_modules",
    "build_distill_terms",
    "check_term_names",
]


@dataclass
class TermContext:
    """What the terms of one task know of its two models, and where its config keeps them."""

    config_prefix: str  # "MODEL.DISTILL" (detection) or "distill" (classification)
    student_embedding_dim: Optional[int] = None
    teacher_embedding_dim: Optional[int] = None
    student_levels: Mapping[Any, int] = field(default_factory=dict)  # feature level -> channels
    teacher_levels: Mapping[Any, int] = field(default_factory=dict)
    class_means: Optional[torch.Tensor] = None  # (C, D') the teacher's class means (ND)
    num_classes: Optional[int] = None  # labels below it are foreground (detection: bg = K)
    embedding_key: str = ""  # the key that sets the student's embedding width
    bn_group: Optional[Callable[[int], Any]] = None  # images -> process group of ABF BatchNorms
    # the logits are K independent per-class sigmoids (RetinaNet, FCOS), not one softmax
    sigmoid_logits: bool = False

    def key(self, *parts: str) -> str:
        """The config key of ``parts`` below the prefix, in the task's case."""
        text = ".".join((self.config_prefix, *parts))
        return text.upper() if self.config_prefix.isupper() else text


class DistillTerm(nn.Module):
    """A named, weighted loss term.  ``forward(inputs)`` returns ``weight * value``; a task that
    warms terms up multiplies by its factor where ``warm_up`` is true (classification)."""

    name: str = ""
    needs_teacher_embeddings: bool = False
    needs_teacher_logits: bool = False
    needs_hard_labels: bool = False  # refuses the (N, C) mixed targets of mixup / cutmix
    trains_modules: bool = False  # owns trainable modules whatever the models (saved with them)
    takes_sigmoid_logits: bool = False  # has a form for per-class sigmoid logits

    def __init__(self, context: TermContext, weight: float = 1.0, warm_up: bool = False):
        super().__init__()
        if context.sigmoid_logits and self.needs_teacher_logits and not self.takes_sigmoid_logits:
            who = f"{context.key('losses')} '{self.name}'"
            raise ConfigError(f"{who}: no form for per-class sigmoid logits (one-stage); use 'kd'")
        if not weight > 0:  # 0 would silently train without it; < 0 pushes away
            losses = context.key("losses")
            raise ConfigError(
                f"{context.key(self.name, 'weight')} {weight}: '{self.name}' is in {losses}, so "
                f"give it a positive weight, or remove it from {losses}"
            )
        self.weight = float(weight)
        self.warm_up = bool(warm_up)

    def positive(self, context: TermContext, param: str, value: float, what: str) -> float:
        """``value`` of the term's key ``param``, which must be positive."""
        if not value > 0:
            raise ConfigError(f"{context.key(self.name, param)} {value}: give a positive {what}")
        return float(value)

    def forward(self, inputs: DistillInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight}, warm_up={self.warm_up}"


DISTILL_TERM_REGISTRY = Registry("DISTILL_TERM")
DISTILL_TERM_REGISTRY.__doc__ = "DistillTerm subclasses under their config name."


def register_distill_term(cls):
    """Class decorator: ``cls`` under ``cls.name`` in :data:`DISTILL_TERM_REGISTRY`."""
    register_as(DISTILL_TERM_REGISTRY, cls.name, cls, "distillation term")
    return cls


def available_distill_terms() -> list[str]:
    return registered_names(DISTILL_TERM_REGISTRY)


def terms_with_modules(names) -> list[str]:
    """The names among ``names`` whose terms always own trainable modules."""
    return [
        n
        for n in names
        if n in DISTILL_TERM_REGISTRY and DISTILL_TERM_REGISTRY.get(n).trains_modules
    ]


def check_term_names(names: Sequence[str], available: Sequence[str], losses_key: str) -> list[str]:
    """``names`` (a task's list of terms, at ``losses_key``) as a list: known, none twice."""
    names = list(names)
    unknown = [n for n in names if n not in available or n not in DISTILL_TERM_REGISTRY]
    if unknown:
        raise ConfigError(
            f"{losses_key} has unknown name(s) {unknown}; choose from {sorted(available)}."
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{losses_key} lists a loss twice: {names}")
    return names


def build_distill_terms(
    names: Sequence[str], nodes: Mapping[str, Mapping], context: TermContext
) -> nn.ModuleList:
    """One term per name, in order, each built from its config node (``nodes[name]``; the
    task's terms are those its config has a node for)."""
    names = check_term_names(names, list(nodes), context.key("losses"))
    return nn.ModuleList(
        DISTILL_TERM_REGISTRY.get(n)(context, **{k.lower(): v for k, v in nodes[n].items()})
        for n in names
    )
