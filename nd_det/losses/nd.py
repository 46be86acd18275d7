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
import torch.nn.functional as F

from .precision import at_least_float32

__all__ = ["nd_loss", "nd_mechanism"]

_EPS = 1e-12
_REDUCTIONS = ("mean", "none")


def nd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    class_means: torch.Tensor,
    weight: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """ND loss, the one entry point of the loss core.

    Args:
        student: (N, D) student embeddings.
        teacher: (N, D) teacher embeddings of the same samples (no gradient needed).
        labels: (N,) int64 class indices into ``class_means``.
        class_means: (C, D) teacher class means, NOT pre-normalised (each row is scaled to unit
            length here; an all-zero row stays zero).
        weight: multiplies the result.
        reduction: ``"mean"``: ``weight * mean_i (1 - <s_i, c_yi/||c_yi||> / max(||s_i||,
            ||t_i||))``, a scalar, ``0`` (still attached to ``student``'s graph) when N == 0;
            ``"none"``: the (N,) per-row terms times ``weight`` (a caller's own masked mean).

    One gather, two row norms and a dot product: no Python loop and no host-device copy, so a
    caller can keep the table on the device as a buffer.  Computed in float32 for any
    lower-precision input (autocast-safe); float64 input stays float64.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nd_loss: reduction={reduction!r}; use one of {_REDUCTIONS}")
    _check_inputs(student, teacher, labels, class_means)
    s = at_least_float32(student)
    t = at_least_float32(teacher)
    means = at_least_float32(class_means)
    unit_means = means / means.norm(dim=1, keepdim=True).clamp_min(_EPS)
    directions = unit_means.index_select(0, labels)
    dot = (s * directions).sum(dim=1)
    denom = torch.maximum(s.norm(dim=1), t.norm(dim=1)).clamp_min(_EPS)
    rows = 1.0 - dot / denom
    if reduction == "none":
        return weight * rows
    if rows.shape[0] == 0:
        return s.sum() * 0.0
    return weight * rows.mean()


@torch.no_grad()
def nd_mechanism(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    class_means: Optional[torch.Tensor] = None,
    foreground: Optional[torch.Tensor] = None,
) -> dict[str, torch.Tensor]:
    """What ND acts on, for logs and reports, over the rows where ``foreground`` (a (N,) bool
    mask; every row when None): ``norm_ratio``, the student's mean embedding norm over the
    teacher's, and, given ``labels`` and ``class_means``, ``cosine_to_class_mean``, the mean
    cosine between each student embedding and the class mean of its label.  Arguments as
    :func:`nd_loss`'s; 0-d float tensors (0 without rows), no host-device sync."""
    s, t = at_least_float32(student), at_least_float32(teacher)
    keep = s.new_ones(len(s)) if foreground is None else foreground.to(s.dtype)
    ratio = (s.norm(dim=1) * keep).sum() / (t.norm(dim=1) * keep).sum().clamp_min(_EPS)
    if class_means is None:
        return {"norm_ratio": ratio}
    centres = at_least_float32(class_means).index_select(0, labels)
    cosines = F.cosine_similarity(s, centres, dim=1)
    return {
        "norm_ratio": ratio,
        "cosine_to_class_mean": (cosines * keep).sum() / keep.sum().clamp_min(1.0),
    }


def _check_inputs(student, teacher, labels, means):
    shapes = [tuple(x.shape) for x in (student, teacher, labels, means)]
    d = shapes[0][-1] if student.dim() == 2 else None
    if shapes[1] != shapes[0] or shapes[2] != shapes[0][:1] or shapes[3][1:] != (d,):
        raise ValueError(
            f"nd_loss: student and teacher (N, D), labels (N,), class_means (C, D); got {shapes}"
        )
