"""Stop training on the first non-finite loss, naming the loss term and the iteration."""

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..errors import NonFiniteError

__all__ = ["check_finite_losses", "FiniteLossSimpleTrainer", "FiniteLossAMPTrainer"]


def check_finite_losses(loss_dict, iteration: int) -> None:
    """Raise NonFiniteError naming every non-finite term (one host sync)."""
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
        f"non-finite loss at iteration {iteration}: {', '.join(bad)}. Training stopped before "
        "the optimizer step (no NaN weights were written). Lower the learning rate or the "
        "weight of that loss (MODEL.DISTILL.<LOSS>.WEIGHT), check the class-means file, and "
        "resume from the last checkpoint with --resume."
    )


class _FiniteLossMixin:
    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        # runs on every rank, after backward and before optimizer.step()
        check_finite_losses(loss_dict, self.iter if iter is None else iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class FiniteLossSimpleTrainer(_FiniteLossMixin, SimpleTrainer):
    """SimpleTrainer that stops with NonFiniteError naming the bad term."""


class FiniteLossAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """AMPTrainer that stops with NonFiniteError naming the bad term."""
