"""DKD (Zhao et al.) on the logits, with the labels as targets (RoI labels, background
included, on a detector)."""

import torch

from ..losses import dkd_loss
from .inputs import DistillInputs
from .term import DistillTerm, TermContext, register_distill_term

__all__ = ["DKDTerm"]


@register_distill_term
class DKDTerm(DistillTerm):
    name = "dkd"
    needs_teacher_logits = True
    needs_hard_labels = True

    def __init__(
        self,
        context: TermContext,
        weight: float = 1.0,
        warm_up: bool = False,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
    ):
        super().__init__(context, weight, warm_up)
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = self.positive(context, "temperature", temperature, "temperature")

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        return self.weight * dkd_loss(
            inputs.student_logits,
            inputs.teacher_logits,
            inputs.labels,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
        )
