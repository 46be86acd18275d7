"""A loss term of the classification distiller: one named, weighted piece of the objective."""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ...class_means import ClassMeans
from ..models.base import Classifier
from ..outputs import ClassifierOutput

__all__ = ["LossTerm", "TermContext"]


@dataclass
class TermContext:
    """What a term may need to build itself (channel counts, embedding sizes, class means)."""

    student: Classifier
    teacher: Optional[Classifier] = None
    class_means: Optional[ClassMeans] = None


class LossTerm(nn.Module):
    """Subclasses set ``name``, ``needs_teacher`` and ``warm_up_by_default`` and implement
    ``compute``, which returns the UNWEIGHTED value; the distiller applies ``weight`` and, when
    ``warm_up`` is true, the warm-up factor.  Parameters a term owns (ReviewKD's fusion, ND's
    projection) are trained with the student and saved in its checkpoints."""

    name: str = ""
    needs_teacher: bool = True
    needs_hard_labels: bool = False  # refuses the mixed targets of data.mixup/cutmix_alpha
    warm_up_by_default: bool = False
    # the ranges of the config parameters, checked by the registry before any model is built
    # (their types come from the defaults)
    positive_params: tuple[str, ...] = ("weight",)
    fraction_params: tuple[str, ...] = ()  # in [0, 1)
    param_choices: dict[str, tuple] = {}

    def __init__(self, weight: float = 1.0, warm_up: Optional[bool] = None):
        super().__init__()
        self.weight = float(weight)
        self.warm_up = self.warm_up_by_default if warm_up is None else bool(warm_up)

    def compute(
        self, student: ClassifierOutput, teacher: Optional[ClassifierOutput], labels: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"weight={self.weight}, warm_up={self.warm_up}"
