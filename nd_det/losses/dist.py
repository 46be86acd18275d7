"""DIST (Huang et al., 2022): inter- and intra-class relations via Pearson correlation."""

import torch

from .kd import check_logit_pair
from .precision import at_least_float32

__all__ = ["dist_loss"]

_EPS = 1e-8


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between matching rows of a and b (N, K) -> (N,).

    Each centred norm is clamped at a tiny floor (as ``F.cosine_similarity`` does) rather than
    adding eps to their product: rows of small spread (rare classes over a small batch, whose
    norms multiply to ~1e-8) keep their true correlation; a constant row correlates 0.
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1).clamp_min(_EPS) * b.norm(dim=1).clamp_min(_EPS))


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``T^2 * (beta * inter + gamma * intra)`` with
    inter = 1 - mean over samples of corr(p_s[i, :], p_t[i, :]),
    intra = 1 - mean over classes of corr(p_s[:, k], p_t[:, k]),  p = softmax(logits / T).
    """
    check_logit_pair("dist_loss", student_logits, teacher_logits)
    if student_logits.shape[0] == 0:
        return at_least_float32(student_logits).sum() * 0.0
    T = float(temperature)
    ps = torch.softmax(at_least_float32(student_logits) / T, dim=1)
    pt = torch.softmax(at_least_float32(teacher_logits) / T, dim=1)
    inter = 1.0 - _pearson_rows(ps, pt).mean()
    intra = 1.0 - _pearson_rows(ps.t(), pt.t()).mean()
    return (T * T) * (beta * inter + gamma * intra)
