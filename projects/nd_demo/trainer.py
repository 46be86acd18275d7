"""Training one detector the demo's way, in this process or as a job of its own.

:class:`DemoTrainer` is :class:`nd_det.engine.DistillTrainer` (detectron2's DefaultTrainer) with
``DEMO.OPTIMIZER`` (see :mod:`nd_det.demo.configs`: AdamW over detectron2's parameter groups and
SOLVER.CLIP_GRADIENTS, or detectron2's SGD), ``metrics.json`` (the loss curves of the figure) and
a :class:`ProgressHook` line every ``log_period`` iterations, and no evaluation hook: the demo
evaluates every model itself, after training, with the same code for all three.

:func:`train_detector` trains one model from its demo config and returns the final checkpoint;
:func:`train_detector_job` does the same in a fresh process started by
:func:`nd_det.utils.parallel.run_jobs` (the demo's two students side by side, the ablation's many
runs): it re-registers the embedded data, logs into its own file and prints its progress lines
with the stage's ETA and the ETA of the whole plan.
"""
import logging
import os
import random
from typing import Optional

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from nd_demo.embedded import register_embedded_dataset
from nd_det.engine import DistillTrainer
from nd_det.utils.progress import format_duration
from .configs import check_backbone_loaded, write_plain_cfg
from .progress import DemoClock, Stage
from .run_log import log_to_file

__all__ = ["DemoTrainer", "ProgressHook", "seed_everything", "METRICS_FILE", "FINAL_WEIGHTS",
           "train_detector", "train_detector_job"]

METRICS_FILE = "metrics.json"
FINAL_WEIGHTS = "model_final.pth"


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


def train_detector(cfg: CfgNode, clock: DemoClock, stage: str, seed: int,
                   log_period: int) -> str:
    """Train one model with the demo trainer; returns its final checkpoint."""
    clock.start(stage)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    write_plain_cfg(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    seed_everything(seed)
    trainer = DemoTrainer(cfg, clock, stage, log_period=log_period)
    trainer.resume_or_load(resume=False)
    if cfg.DEMO.IMAGENET_INIT:
        check_backbone_loaded(trainer.model, cfg.MODEL.WEIGHTS)
    # the same random streams from the first iteration on, whatever the model building drew
    # (a distilled student also builds a teacher and its fusion modules)
    seed_everything(seed)
    trainer.train()
    weights = os.path.join(cfg.OUTPUT_DIR, FINAL_WEIGHTS)
    if not os.path.isfile(weights):
        raise RuntimeError(f"training {stage} ended without {weights}; see the log")
    clock.finish(stage, f"{cfg.SOLVER.MAX_ITER} iterations")
    return weights


def train_detector_job(cfg: CfgNode, stage: str, seed: int, log_period: int, log_file: str,
                       units_per_iter: float, tail_units: float = 0.0,
                       dataset_root: Optional[str] = None) -> str:
    """:func:`train_detector` in a process of its own (see the module docstring).

    ``units_per_iter`` prices one iteration and ``tail_units`` what the plan still has to do
    after this job (DemoClock's units), so its lines show the plan's ETA."""
    register_embedded_dataset(dataset_root)
    stages = [Stage(stage, int(cfg.SOLVER.MAX_ITER), units_per_iter)]
    if tail_units > 0:
        stages.append(Stage("rest of the plan", 1, tail_units))
    with log_to_file(log_file):
        logger = logging.getLogger("nd_det.demo")

        def emit(line: str) -> None:
            logger.info(line.strip())
            # the iteration lines ("  [stage] iter ...") only: the caller prints the stages'
            # start and end
            if line.startswith("  ["):
                print(line, flush=True)

        clock = DemoClock(stages, emit=emit)
        return train_detector(cfg, clock, stage, seed, log_period)
