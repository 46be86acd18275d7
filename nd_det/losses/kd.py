"""Classic logit distillation (Hinton et al., 2015): over one softmax of the classes, and over
independent per-class sigmoids (the classification logits of RetinaNet / FCOS)."""

import torch
import torch.nn.functional as F

from .precision import at_least_float32

__all__ = ["kd_loss", "sigmoid_kd_loss"]


def check_logit_pair(loss: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Raise a ValueError naming ``loss`` unless both logits are (N, K) of one shape."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"{loss}: student and teacher logits must both be (N, K); got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``T^2 * mean over rows of KL(softmax(t/T) || softmax(s/T))``, in float32
    (float64 inputs stay float64).

    Returns a zero that keeps ``student_logits``' graph when there are no rows.
    """
    check_logit_pair("kd_loss", student_logits, teacher_logits)
    if student_logits.shape[0] == 0:
        return at_least_float32(student_logits).sum() * 0.0
    T = float(temperature)
    log_ps = F.log_softmax(at_least_float32(student_logits) / T, dim=1)
    log_pt = F.log_softmax(at_least_float32(teacher_logits) / T, dim=1)
    kl = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(dim=1)
    return kl.mean() * (T * T)


def sigmoid_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KD for logits that are K independent per-class sigmoids (a dense detector's classifier:
    no background logit, no softmax over classes): ``T^2 * mean over rows of the sum over the K
    classes of KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T)))``, in float32 (float64
    inputs stay float64).  Returns a zero that keeps ``student_logits``' graph when there are no
    rows."""
    check_logit_pair("sigmoid_kd_loss", student_logits, teacher_logits)
    if student_logits.shape[0] == 0:
        return at_least_float32(student_logits).sum() * 0.0
    T = float(temperature)
    s = at_least_float32(student_logits) / T
    t = at_least_float32(teacher_logits) / T
    p_t = torch.sigmoid(t)
    # log p = logsigmoid(x) and log(1 - p) = logsigmoid(-x): finite for saturated logits
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (
        F.logsigmoid(-t) - F.logsigmoid(-s)
    )
    return kl.sum(dim=1).mean() * (T * T)
