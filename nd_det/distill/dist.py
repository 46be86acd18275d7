"""DIST (Huang et al.) on the logits: inter- and intra-class Pearson relations."""

import torch

from ..losses import dist_loss
from .inputs import DistillInputs
from .term import DistillTerm, TermContext, register_distill_term

__all__ = ["DISTTerm"]


@register_distill_term
class DISTTerm(DistillTerm):
    name = "dist"
    needs_teacher_logits = True

    def __init__(
        self,
        context: TermContext,
        weight: float = 1.0,
        warm_up: bool = False,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
    ):
        super().__init__(context, weight, warm_up)
        self.beta, self.gamma = float(beta), float(gamma)
        self.temperature = self.positive(context, "temperature", temperature, "temperature")

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        return self.weight * dist_loss(
            inputs.student_logits, inputs.teacher_logits, self.beta, self.gamma, self.temperature
        )
