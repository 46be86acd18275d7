"""Preemption of a detectron2 training (:mod:`nd_det.utils.preemption`): SIGTERM or SIGUSR1
stops training after the running step, with a checkpoint of it.

1. the step that is running finishes (a step is never cut in half);
2. every process agrees to stop after that same iteration (a tiny all-gather of the flag after
   each step: a signal can reach the processes on both sides of a step boundary);
3. rank 0 writes ``model_<iteration>.pth`` atomically and tags it in ``last_checkpoint``, the same
   checkpoint a periodic one would be (weights, optimizer, scheduler, iteration, data position and
   every process's RNG states);
4. the process exits with status :data:`EXIT_PREEMPTED` (3); ``--resume`` continues from that
   checkpoint and ends with the weights of an uninterrupted run.

The launcher (:func:`forward_signals`) passes these signals on to the worker processes it
started, which are what train in a multi-process run.
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import threading

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.preemption import EXIT_PREEMPTED, PREEMPTION_SIGNALS, PreemptionSignals

__all__ = ["EXIT_PREEMPTED", "PREEMPTION_SIGNALS", "PreemptionHook", "forward_signals"]

logger = logging.getLogger(__name__)


class PreemptionHook(HookBase):
    """Writes a checkpoint of the current iteration and exits (status 3) once SIGTERM or SIGUSR1
    has arrived (see the module docstring).  Register it on every rank, after the hook that steps
    the LR scheduler and before evaluation, so its checkpoint equals a periodic one."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.signals = PreemptionSignals()

    def before_train(self):
        self.signals.install()

    def after_step(self):
        received = self.signals.received
        if comm.get_world_size() > 1:
            received = max(comm.all_gather(received))
        if not received:
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        self.checkpointer.save(name, iteration=iteration)  # every rank: RNG states are gathered
        comm.synchronize()
        if comm.is_main_process():
            logger.warning(
                "%s received: training stopped after iteration %d, checkpoint %s written; "
                "continue with --resume (exit status %d)",
                signal.Signals(received).name,
                iteration,
                os.path.join(self.checkpointer.save_dir, name + ".pth"),
                EXIT_PREEMPTED,
            )
        # the handlers stay (after_train restores nothing): a second signal while the process
        # exits changes nothing
        self.signals = PreemptionSignals()
        raise SystemExit(EXIT_PREEMPTED)

    def after_train(self):
        self.signals.restore()


@contextlib.contextmanager
def forward_signals():
    """In a launcher: pass SIGTERM / SIGUSR1 on to the worker processes it started (they train;
    this process only waits for them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, _frame):
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
