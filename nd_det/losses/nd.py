"""ND loss: regularise the student's embedding norm and direction (Wang et al., 2023).

For one sample with label y, student embedding s, teacher embedding t of the same sample and
teacher class mean c_y::

    L = 1 - <s, c_y / ||c_y||> / max(||s||, ||t||)

When ||s|| >= ||t|| this is 1 - cos(s, c_y); otherwise it also pushes the student norm up
towards the teacher's.  The value is 0 at best.  Nothing is detached: the gradient flows into the
student only because the teacher embedding and the class means carry no graph.
"""
from typing import Optional

import torch
from torch import nn

from .precision import at_least_float32

__all__ = ["nd_loss", "nd_loss_unit", "nd_loss_per_row", "NDLoss", "unit_class_means"]

_EPS = 1e-12


def unit_class_means(class_means: torch.Tensor) -> torch.Tensor:
    """Rows of ``class_means`` scaled to unit L2 norm (float32, or float64 for float64 input);
    all-zero rows stay zero."""
    means = at_least_float32(class_means)
    return means / means.norm(dim=1, keepdim=True).clamp_min(_EPS)


def nd_loss_per_row(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    unit_means: torch.Tensor,
) -> torch.Tensor:
    """The (N,) per-row ND terms against a unit-normalised class-mean table.

    One gather, two row norms and a dot product: no Python loop and no host-device copy, so the
    detection meta-architecture can keep the table on the device as a buffer.  Computed in
    float32 for any lower-precision input (autocast-safe); float64 input stays float64.
    """
    _check_inputs(student, teacher, labels, unit_means)
    s = at_least_float32(student)
    t = at_least_float32(teacher)
    directions = at_least_float32(unit_means).index_select(0, labels)
    dot = (s * directions).sum(dim=1)
    denom = torch.maximum(s.norm(dim=1), t.norm(dim=1)).clamp_min(_EPS)
    return 1.0 - dot / denom


def nd_loss_unit(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    unit_means: torch.Tensor,
    weight: float = 1.0,
) -> torch.Tensor:
    """ND loss against a table of class means that is already unit-normalised: ``weight`` times
    the mean of :func:`nd_loss_per_row`; 0, still attached to ``student``'s graph, for N == 0."""
    rows = nd_loss_per_row(student, teacher, labels, unit_means)
    if rows.shape[0] == 0:
        return at_least_float32(student).sum() * 0.0
    return weight * rows.mean()


def nd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    class_means: torch.Tensor,
    weight: float = 1.0,
) -> torch.Tensor:
    """ND loss.

    Args:
        student: (N, D) student embeddings.
        teacher: (N, D) teacher embeddings of the same samples (no gradient needed).
        labels: (N,) int64 class indices into ``class_means``.
        class_means: (C, D) teacher class means, NOT pre-normalised.
        weight: multiplies the mean over rows.

    Returns:
        ``weight * mean_i (1 - <s_i, c_yi/||c_yi||> / max(||s_i||, ||t_i||))`` as a float32
        scalar; ``0`` (still attached to ``student``'s graph) when N == 0.
    """
    return nd_loss_unit(student, teacher, labels, unit_class_means(class_means), weight)


def _check_inputs(student, teacher, labels, means):
    if student.dim() != 2 or teacher.shape != student.shape:
        raise ValueError(
            f"nd_loss: student and teacher must both be (N, D); got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    if labels.shape != student.shape[:1]:
        raise ValueError(
            f"nd_loss: labels must be (N,) = ({student.shape[0]},); got {tuple(labels.shape)}"
        )
    if means.dim() != 2 or means.shape[1] != student.shape[1]:
        raise ValueError(
            f"nd_loss: class_means must be (C, {student.shape[1]}) to match the embedding size; "
            f"got {tuple(means.shape)}"
        )


class NDLoss(nn.Module):
    """Module form of :func:`nd_loss` holding the unit-normalised class means as a buffer.

    The buffer moves with ``.to(device)`` and is not persistent (it is rebuilt from the
    class-means file, never saved into training checkpoints).
    """

    def __init__(self, class_means: torch.Tensor, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)
        self.register_buffer("unit_means", unit_class_means(class_means), persistent=False)

    def forward(self, student, teacher, labels, weight: Optional[float] = None):
        w = self.weight if weight is None else weight
        return nd_loss_unit(student, teacher, labels, self.unit_means, w)
