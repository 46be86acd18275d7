"""Logit-based terms: KD (Hinton et al.), DKD (Zhao et al.), DIST (Huang et al.).

A student with a distillation head (DeiT's distillation token) is distilled through that head
(``ClassifierOutput.distill_logits``), its class-token head learning from the labels alone."""

import torch.nn.functional as F

from ...losses import dist_loss, dkd_loss, kd_loss
from .base import LossTerm
from .registry import register_loss_term

__all__ = ["KDTerm", "DKDTerm", "DISTTerm"]


def _student_logits(student):
    return student.logits if student.distill_logits is None else student.distill_logits


@register_loss_term
class KDTerm(LossTerm):
    name = "kd"
    warm_up_by_default = True
    positive_params = ("weight", "temperature")

    def __init__(
        self,
        context,
        weight: float = 1.0,
        warm_up=None,
        temperature: float = 4.0,
        hard: bool = False,
    ):
        super().__init__(weight, warm_up)
        self.temperature = float(temperature)
        self.hard = bool(hard)  # DeiT's hard distillation: CE with the teacher's top class

    def compute(self, student, teacher, labels):
        if self.hard:
            return F.cross_entropy(_student_logits(student).float(), teacher.logits.argmax(1))
        return kd_loss(_student_logits(student), teacher.logits, self.temperature)


@register_loss_term
class DKDTerm(LossTerm):
    name = "dkd"
    warm_up_by_default = True
    needs_hard_labels = True
    positive_params = ("weight", "temperature")

    def __init__(
        self,
        context,
        weight: float = 1.0,
        warm_up=None,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
    ):
        super().__init__(weight, warm_up)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)

    def compute(self, student, teacher, labels):
        return dkd_loss(
            _student_logits(student),
            teacher.logits,
            labels,
            self.alpha,
            self.beta,
            self.temperature,
        )


@register_loss_term
class DISTTerm(LossTerm):
    name = "dist"
    warm_up_by_default = True
    positive_params = ("weight", "temperature")

    def __init__(
        self,
        context,
        weight: float = 1.0,
        warm_up=None,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 4.0,
    ):
        super().__init__(weight, warm_up)
        self.beta, self.gamma, self.temperature = float(beta), float(gamma), float(temperature)

    def compute(self, student, teacher, labels):
        return dist_loss(
            _student_logits(student), teacher.logits, self.beta, self.gamma, self.temperature
        )
