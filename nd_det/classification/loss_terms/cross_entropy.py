"""Cross-entropy with the ground-truth labels."""

import torch.nn.functional as F

from .base import LossTerm
from .registry import register_loss_term

__all__ = ["CrossEntropyTerm"]


@register_loss_term
class CrossEntropyTerm(LossTerm):
    name = "ce"
    needs_teacher = False
    fraction_params = ("label_smoothing",)

    def __init__(self, context, weight: float = 1.0, warm_up=None, label_smoothing: float = 0.0):
        super().__init__(weight, warm_up)
        self.label_smoothing = float(label_smoothing)

    def compute(self, student, teacher, labels):
        return F.cross_entropy(student.logits.float(), labels, label_smoothing=self.label_smoothing)
