"""The stop on the first non-finite loss, before the optimizer step (torch only: detection and
classification trainers share it)."""

import torch

from ..errors import NonFiniteError

__all__ = ["check_finite_losses"]


def check_finite_losses(
    loss_dict: dict, iteration: int, weight_key: str = "MODEL.DISTILL.<LOSS>.WEIGHT"
) -> None:
    """Raise NonFiniteError naming every non-finite term (one host sync); ``weight_key``: where
    the task's config sets a loss's weight."""
    values = list(loss_dict.values())
    if not values:
        return
    finite = torch.stack([v.detach().float().isfinite().all() for v in values])
    if bool(finite.all()):
        return
    bad = [
        f"{k}={float(v.detach().float().mean()):g}"
        for (k, v), ok in zip(loss_dict.items(), finite.tolist())
        if not ok
    ]
    raise NonFiniteError(
        f"non-finite loss at iteration {iteration}: {', '.join(bad)}; stopped before the optimizer "
        f"step: lower the learning rate or that loss's weight ({weight_key}), then --resume"
    )
