"""Stop training on the first non-finite loss, naming the loss term and the iteration, on every
rank before its optimizer step.

detectron2's trainers check the summed loss too, but only on the main process, after gathering
every rank's metrics (with ``async_write_metrics`` in a thread), and raise a FloatingPointError
traceback: the other ranks step on with the non-finite gradients and wait in the next
collective.  Their ``_write_metrics`` is the one point every rank passes after ``backward`` and
before ``optimizer.step``, hence the override (detectron2 has no public hook there that sees the
losses)."""

from detectron2.engine import AMPTrainer, SimpleTrainer

from ..utils.finite_losses import check_finite_losses

__all__ = ["FiniteLossSimpleTrainer", "FiniteLossAMPTrainer"]


class _FiniteLossMixin:
    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        # runs on every rank, after backward and before optimizer.step()
        check_finite_losses(loss_dict, self.iter if iter is None else iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class FiniteLossSimpleTrainer(_FiniteLossMixin, SimpleTrainer):
    """SimpleTrainer that stops with NonFiniteError naming the bad term."""


class FiniteLossAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """AMPTrainer that stops with NonFiniteError naming the bad term."""
