"""The classification distiller: a student, a frozen teacher and the distillation terms of
:mod:`nd_det.distill`.

``Distiller(student, teacher, terms, warm_up_epochs, label_smoothing)(images, labels, epoch)``
returns ``(losses, logits)``: ``losses`` maps ``"loss_ce"`` (the cross-entropy with the labels,
the task loss) and ``"loss_<term>"`` (weighted, and warmed up where the term's ``warm_up`` is
true) to their values, plus ``"loss"``, their sum.  The teacher is deliberately NOT a
sub-module: it stays out of ``state_dict()``, ``parameters()`` (so out of the optimizer and
checkpoints) and out of DistributedDataParallel; it always runs in eval mode under
``torch.no_grad``.  After a training forward, ``mechanism`` holds ND's
(:meth:`~nd_det.distill.NDTerm.mechanism`) when an ND term is configured.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..distill import DistillInputs, NDTerm
from ..utils.modules import freeze
from .models.base import Classifier

__all__ = ["Distiller", "warm_up_factor"]


def warm_up_factor(epoch: int, warm_up_epochs: float) -> float:
    """``min(1, epoch / warm_up_epochs)`` for the 0-based epoch index (1 without warm-up).

    The first epoch (index 0) therefore trains the warmed-up terms with factor 0, as the
    reference implementation does."""
    if warm_up_epochs <= 0:
        return 1.0
    return min(1.0, float(epoch) / float(warm_up_epochs))


class Distiller(nn.Module):
    def __init__(
        self,
        student: Classifier,
        teacher: Optional[Classifier],
        terms: nn.ModuleDict,
        warm_up_epochs: float = 0.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.student = student
        self.terms = terms
        self.warm_up_epochs = float(warm_up_epochs)
        self.label_smoothing = float(label_smoothing)
        self.mechanism: dict[str, torch.Tensor] = {}
        # a plain attribute, not a registered sub-module (see the module docstring)
        self.__dict__["teacher"] = freeze(teacher) if teacher is not None else None

    def teacher_to(self, device) -> None:
        if self.teacher is not None:
            self.teacher.to(device)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int = 0
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out = self.student(images)
        losses = {
            "loss_ce": F.cross_entropy(
                out.logits.float(), labels, label_smoothing=self.label_smoothing
            )
        }
        if self.terms:
            with torch.no_grad():
                teacher = self.teacher(images)
            inputs = DistillInputs(
                labels=labels,
                student_embeddings=out.embedding,
                # a DeiT student is distilled through its distillation head
                student_logits=out.logits if out.distill_logits is None else out.distill_logits,
                student_features=out.features,
                teacher_features=teacher.features,
                teacher_embeddings=teacher.embedding,
                teacher_logits=teacher.logits,
                student_preact_features=out.preact_features,
                teacher_preact_features=teacher.preact_features,
            )
            factor = warm_up_factor(epoch, self.warm_up_epochs)
            for name, term in self.terms.items():
                value = term(inputs).float()
                losses[f"loss_{name}"] = value * factor if term.warm_up else value
                if self.training and isinstance(term, NDTerm):
                    self.mechanism = term.mechanism(inputs)
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses, out.logits
