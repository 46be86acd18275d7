"""KD (Hinton et al.) on the logits: the RoI logits of a two-stage detector, the per-anchor
per-class sigmoid logits of a one-stage detector, the logits of a classifier (its distillation
head's, DeiT)."""

import torch
import torch.nn.functional as F

from ..losses import kd_loss, sigmoid_kd_loss
from .inputs import DistillInputs
from .term import DistillTerm, TermContext, register_distill_term

__all__ = ["KDTerm"]


@register_distill_term
class KDTerm(DistillTerm):
    """``hard``: cross-entropy with the teacher's top class (DeiT's hard distillation).  Logits
    that are per-class sigmoids (``context.sigmoid_logits``: RetinaNet, FCOS) are distilled as K
    Bernoulli distributions per row (:func:`~nd_det.losses.sigmoid_kd_loss`)."""

    name = "kd"
    needs_teacher_logits = True
    takes_sigmoid_logits = True

    def __init__(
        self,
        context: TermContext,
        weight: float = 1.0,
        warm_up: bool = False,
        temperature: float = 1.0,
        hard: bool = False,
    ):
        super().__init__(context, weight, warm_up)
        self.temperature = self.positive(context, "temperature", temperature, "temperature")
        self.hard = bool(hard)
        self.loss = sigmoid_kd_loss if context.sigmoid_logits else kd_loss

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        if self.hard:
            target = inputs.teacher_logits.argmax(1)
            return self.weight * F.cross_entropy(inputs.student_logits.float(), target)
        return self.weight * self.loss(
            inputs.student_logits, inputs.teacher_logits, self.temperature
        )
