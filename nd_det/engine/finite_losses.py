"""Stop training on the first non-finite loss, naming the loss term and the iteration."""
import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from ..errors import UserError

__all__ = ["NonFiniteLossError", "check_finite_losses", "FiniteLossSimpleTrainer",
           "FiniteLossAMPTrainer"]


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss term became NaN/inf; raised before the optimizer step, on every rank."""


def check_finite_losses(loss_dict, iteration: int) -> None:
    """Raise NonFiniteLossError naming every non-finite term (one host sync)."""
    values = list(loss_dict.values())
    if not values:
        return
    finite = torch.stack([v.detach().float().isfinite().all() for v in values])
    if bool(finite.all()):
        return
    bad = [f"{k}={float(v.detach().float().mean()):g}"
           for (k, v), ok in zip(loss_dict.items(), finite.tolist()) if not ok]
    raise NonFiniteLossError(
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
    """SimpleTrainer that stops with NonFiniteLossError naming the bad term."""


class FiniteLossAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """AMPTrainer that stops with NonFiniteLossError naming the bad term."""
