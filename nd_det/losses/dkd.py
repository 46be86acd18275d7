"""Decoupled knowledge distillation (Zhao et al., 2022): target + non-target class KD."""

import torch
import torch.nn.functional as F

from .kd import check_logit_pair
from .precision import at_least_float32

__all__ = ["dkd_loss"]

# Logit given to the target class when it must drop out of the non-target softmax.  Finite so that
# no inf - inf appears; exp() of it underflows to exactly 0 in float32/float64.
_MASKED = -1e9


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """``alpha * TCKD + beta * NCKD``, both scaled by T^2 and averaged over rows (float32; float64
    inputs stay float64).

    TCKD: KL between the binary (target, rest) distributions of teacher and student.
    NCKD: KL between the teacher's and student's softmax over the non-target classes only.
    Computed in log space, so saturated logits give no log(0).
    """
    check_logit_pair("dkd_loss", student_logits, teacher_logits)
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"dkd_loss: labels must be (N,) = ({student_logits.shape[0]},); "
            f"got {tuple(labels.shape)}"
        )
    if student_logits.shape[0] == 0:
        return at_least_float32(student_logits).sum() * 0.0
    T = float(temperature)
    zs = at_least_float32(student_logits) / T
    zt = at_least_float32(teacher_logits) / T
    # a scatter, not F.one_hot: one_hot checks the label range with a host sync
    target = torch.zeros_like(zs, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)

    tckd = _binary_kl(zs, zt, target)
    log_ps_nt = F.log_softmax(zs.masked_fill(target, _MASKED), dim=1)
    log_pt_nt = F.log_softmax(zt.masked_fill(target, _MASKED), dim=1)
    nckd = F.kl_div(log_ps_nt, log_pt_nt, reduction="none", log_target=True).sum(dim=1)
    return (alpha * tckd.mean() + beta * nckd.mean()) * (T * T)


def _binary_kl(zs, zt, target):
    """Per-row KL between (p_target, 1 - p_target) of teacher and student, from logits."""

    def log_binary(z):
        lse_all = torch.logsumexp(z, dim=1)
        log_p_target = z.masked_fill(~target, _MASKED).logsumexp(dim=1) - lse_all
        log_p_rest = z.masked_fill(target, _MASKED).logsumexp(dim=1) - lse_all
        return torch.stack([log_p_target, log_p_rest], dim=1)

    log_bs, log_bt = log_binary(zs), log_binary(zt)
    return F.kl_div(log_bs, log_bt, reduction="none", log_target=True).sum(dim=1)
