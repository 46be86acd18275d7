"""DemoTrainer: nd-det's DistillTrainer with the demo's optimizer choice and progress lines.

On top of :class:`nd_det.engine.DistillTrainer` (detectron2's DefaultTrainer):

* ``build_optimizer`` honours ``DEMO.OPTIMIZER`` (see :mod:`nd_det.demo.configs`): AdamW over
  detectron2's parameter groups (no weight decay on norm layers when SOLVER.WEIGHT_DECAY_NORM is
  0), wrapped by detectron2's SOLVER.CLIP_GRADIENTS clipping; "SGD" keeps detectron2's optimizer;
* writers: ``metrics.json`` (detectron2's JSONWriter; the demo's loss curves read it) and
  detectron2's metric printer (into the log file), every ``log_period`` iterations;
* a :class:`ProgressHook` prints one line every ``log_period`` iterations with the stage's and
  the whole demo's ETA (:class:`nd_det.demo.progress.DemoClock`);
* no evaluation hook: the demo evaluates every model itself, after training (one COCO evaluation
  per model, with the same code for all three).
"""
import os
import random

import numpy as np
import torch
from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from ..engine import DistillTrainer
from ..utils.progress import format_duration
from .progress import DemoClock

__all__ = ["DemoTrainer", "ProgressHook", "seed_everything", "METRICS_FILE"]

METRICS_FILE = "metrics.json"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels where it has them
    (ops without one only warn): two runs with one seed on one machine give the same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class ProgressHook(HookBase):
    """Every ``period`` iterations (and at the last one): iteration, median total loss of the
    last ``period`` iterations, seconds per iteration, stage ETA and overall ETA."""

    def __init__(self, clock: DemoClock, stage: str, period: int):
        self.clock = clock
        self.stage = stage
        self.period = max(1, int(period))

    def after_step(self):
        done = self.trainer.iter + 1
        total = self.trainer.max_iter
        if done % self.period and done != total:
            return
        self.clock.advance(self.stage, done)
        history = self.trainer.storage.history("total_loss")
        loss = history.median(self.period)
        seconds = self.clock.stage(self.stage).seconds / max(done, 1)
        self.clock.emit(
            f"  [{self.stage}] iter {done:>4d}/{total}  loss {loss:7.4f}  {seconds:5.2f} s/iter  "
            f"stage ETA {format_duration(self.clock.stage_eta(self.stage))}  "
            f"overall ETA {format_duration(self.clock.overall_eta())}")


class DemoTrainer(DistillTrainer):
    """DistillTrainer + DEMO.OPTIMIZER + progress lines + metrics.json every ``log_period``."""

    def __init__(self, cfg, clock: DemoClock, stage: str, log_period: int = 10):
        # read by build_hooks / build_writers, which DefaultTrainer.__init__ calls
        self._clock = clock
        self._stage = stage
        self._log_period = max(1, int(log_period))
        self._writers = None
        super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        if cfg.DEMO.OPTIMIZER == "SGD":
            return super().build_optimizer(cfg, model)
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR,
                                      weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        return maybe_add_gradient_clipping(cfg, optimizer)

    def build_writers(self):
        # one set of writers, however often it is asked for (metrics.json is opened once)
        if self._writers is None:
            self._writers = [
                CommonMetricPrinter(self.cfg.SOLVER.MAX_ITER),
                JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, METRICS_FILE),
                           window_size=self._log_period),
            ]
        return self._writers

    def build_hooks(self):
        kept = [h for h in super().build_hooks()
                if not isinstance(h, (hooks.EvalHook, hooks.PeriodicWriter))]
        kept.append(ProgressHook(self._clock, self._stage, self._log_period))
        kept.append(hooks.PeriodicWriter(self.build_writers(), period=self._log_period))
        return kept
