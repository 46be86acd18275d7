"""Preemption signals, caught (stdlib only: detection and classification trainers share them).

SLURM sends SIGTERM before it stops a job (``scancel``, a preemption, the time limit; SIGKILL
follows after its KillWait), and the signal ``--signal=USR1@<seconds>`` asks for, ahead of the
limit.  A trainer that has caught one finishes the running step, writes a checkpoint of it (every
process agreeing on the same step) and exits with status :data:`EXIT_PREEMPTED`; ``--resume``
continues from that checkpoint.
"""

import signal
import threading

__all__ = ["EXIT_PREEMPTED", "PREEMPTION_SIGNALS", "PreemptionSignals"]

EXIT_PREEMPTED = 3
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionSignals:
    """While installed, SIGTERM and SIGUSR1 set ``received`` (the signal number; 0: none)
    instead of ending the process.  Python delivers signals to the main thread only: elsewhere
    ``install`` does nothing."""

    def __init__(self):
        self.received = 0
        self._previous = {}

    def _on_signal(self, signum, _frame):
        self.received = signum

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
