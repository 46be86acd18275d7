"""Progress of long work: durations for progress lines, and the ETA clock every long tool uses
(classification training, class-mean extraction, the benchmark's rounds).  detectron2's
trainer prints its own ETA (CommonMetricPrinter); these tools are not detectron2 trainers, and
the classification package must not import detectron2."""

import time
from typing import Optional

__all__ = ["format_duration", "ProgressClock"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a non-negative number of seconds (negative values count as 0)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressClock:
    """Counts finished steps of a run of ``total_iters`` (``done_iters`` already done when
    resuming) and estimates the remaining time from the mean step time of this process,
    skipping the first ``skip`` steps (start-up costs)."""

    def __init__(self, total_iters: int, done_iters: int = 0, skip: int = 2):
        self.total = int(total_iters)
        self.done = int(done_iters)
        self.skip = skip
        self._counted = 0
        self._timed_seconds = 0.0
        self._last: Optional[float] = None

    def start(self) -> None:
        self._last = time.perf_counter()

    def step(self) -> float:
        """Mark one step finished; returns its duration in seconds."""
        now = time.perf_counter()
        duration = now - (self._last if self._last is not None else now)
        self._last = now
        self.done += 1
        self._counted += 1
        if self._counted > self.skip:
            self._timed_seconds += duration
        return duration

    @property
    def seconds_per_iter(self) -> Optional[float]:
        timed = self._counted - self.skip
        return self._timed_seconds / timed if timed > 0 else None

    def eta_seconds(self) -> Optional[float]:
        per = self.seconds_per_iter
        return None if per is None else per * max(0, self.total - self.done)
