"""Progress lines with a per-stage and an overall ETA for the demo's one long process.

The demo is a fixed plan of stages (train the teacher, extract class means, train two students,
evaluate, export, report).  :class:`DemoClock` knows the plan in *work units* - one unit is one
training image through the teacher, the other stages are priced relative to it - and estimates
the time left from what it has measured so far:

* the running stage: its remaining units at the rate measured in that stage;
* the stages still to come: their units at the overall rate measured so far (seconds per unit
  over every finished stage).

The prices of :data:`UNIT_PRICES` only set how the stages compare; every second in the estimate
comes from measured time.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from nd_det.utils.progress import format_duration

__all__ = ["UNIT_PRICES", "Stage", "DemoClock"]

# Relative cost of one item of each kind of work, in "one training image through the teacher".
# Measured with the default configs on a 2-core CPU, one thread (seconds per 4-image iteration:
# teacher 0.81, student alone 0.63, distilled student 1.07; inference ~0.08 s per image).
UNIT_PRICES = {
    "teacher_image": 1.0,
    "student_image": 0.78,
    "distilled_image": 1.32,
    "inference_image": 0.4,
    "fixed": 8.0,  # a stage of its own (export, report, figure), in teacher-image units
}


@dataclass
class Stage:
    """One step of the plan: ``steps`` items (iterations, images) of ``units_per_step`` each."""

    name: str
    steps: int
    units_per_step: float
    done_steps: int = 0
    started: Optional[float] = None
    finished: Optional[float] = None

    @property
    def units(self) -> float:
        return self.steps * self.units_per_step

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished if self.finished is not None else time.perf_counter()) - self.started


@dataclass
class DemoClock:
    """The demo's plan and its measured progress; prints through ``emit`` (default: print)."""

    stages: List[Stage]
    emit: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self._by_name: Dict[str, Stage] = {stage.name: stage for stage in self.stages}
        if len(self._by_name) != len(self.stages):
            raise ValueError("stage names must be unique")

    def stage(self, name: str) -> Stage:
        return self._by_name[name]

    def index(self, name: str) -> int:
        return self.stages.index(self._by_name[name]) + 1

    def start(self, name: str) -> None:
        stage = self._by_name[name]
        stage.started = time.perf_counter()
        self.emit(f"[demo {self.index(name)}/{len(self.stages)}] {name} ...")

    def advance(self, name: str, done_steps: int) -> None:
        self._by_name[name].done_steps = min(done_steps, self._by_name[name].steps)

    def finish(self, name: str, summary: str = "") -> None:
        stage = self._by_name[name]
        stage.done_steps = stage.steps
        stage.finished = time.perf_counter()
        tail = f": {summary}" if summary else ""
        self.emit(f"[demo {self.index(name)}/{len(self.stages)}] {name} done in "
                  f"{format_duration(stage.seconds)}{tail}  (overall ETA "
                  f"{format_duration(self.overall_eta())})")

    def stage_eta(self, name: str) -> float:
        """Seconds left in stage ``name`` at its measured rate (0 before any step is done)."""
        stage = self._by_name[name]
        if stage.done_steps <= 0:
            return 0.0
        return stage.seconds / stage.done_steps * (stage.steps - stage.done_steps)

    def overall_eta(self) -> float:
        """Seconds until the whole plan is done (see the module docstring); 0 when unknown."""
        spent = units = 0.0  # over the stages that did some work: the overall rate
        for stage in self.stages:
            if stage.started is None:
                continue
            done = stage.units if stage.finished is not None else \
                stage.done_steps * stage.units_per_step
            if done > 0:
                spent += stage.seconds
                units += done
        if units <= 0:
            return 0.0
        rate = spent / units
        left = 0.0
        for stage in self.stages:
            if stage.finished is not None:
                continue
            if stage.started is not None and stage.done_steps > 0:
                left += self.stage_eta(stage.name)
            else:
                left += stage.units * rate
        return left

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage_seconds(self) -> Dict[str, float]:
        """Measured seconds of each stage that ran."""
        return {stage.name: round(stage.seconds, 1) for stage in self.stages
                if stage.started is not None}
