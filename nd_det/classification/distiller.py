"""The classification distiller: a student, a frozen teacher and a set of named loss terms.

``Distiller(student, teacher, terms, warm_up_epochs)(images, labels, epoch)`` returns
``(losses, logits)``: ``losses`` maps ``"loss_<term>"`` to its weighted (and warmed-up) value plus
``"loss"``, their sum.  The teacher is deliberately NOT a sub-module: it stays out of
``state_dict()``, ``parameters()`` (so out of the optimizer and checkpoints) and out of
DistributedDataParallel; it always runs in eval mode under ``torch.no_grad``.
"""

from typing import Optional

import torch
from torch import nn

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
    ):
        super().__init__()
        self.student = student
        self.terms = terms
        self.warm_up_epochs = float(warm_up_epochs)
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
        teacher_out = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_out = self.teacher(images)
        student_out = self.student(images)
        factor = warm_up_factor(epoch, self.warm_up_epochs)
        losses: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            value = term.compute(student_out, teacher_out, labels).float() * term.weight
            if term.warm_up:
                value = value * factor
            losses[f"loss_{name}"] = value
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses, student_out.logits
