"""Training one detector the demo's way, in this process or as a job of its own.

:class:`DemoTrainer` is :class:`nd_det.engine.DistillTrainer` (detectron2's DefaultTrainer
workflow) with DEMO.OPTIMIZER, ``metrics.json`` and detectron2's own progress lines (loss, time
per iteration, ETA: ``CommonMetricPrinter``) every ``log_period`` iterations, and no evaluation
hook: the demo evaluates every model itself, after training, with the same code for all three.
"""

import contextlib
import logging
import os
from typing import Optional

import torch
from detectron2.engine import hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from nd_det.engine import DistillTrainer
from nd_det.utils.atomic_file import atomic_write_text

from .configs import without_demo_keys
from .embedded import register_embedded_dataset

METRICS_FILE = "metrics.json"
FINAL_WEIGHTS = "model_final.pth"
# detectron2's, fvcore's and ours: their INFO lines go to the log file; the console shows the
# demo's own lines, detectron2's training progress (d2.utils.events) and every warning
LOGGERS = ("detectron2", "fvcore", "iopath", "nd_det", "nd_common", "py.warnings")


@contextlib.contextmanager
def log_to_file(path: str, console_prefix: str = "", app: str = ""):
    """INFO logs of :data:`LOGGERS` and of the application's logger ``app`` into ``path``; on the
    console only the ``app`` logger's lines, detectron2's progress lines (prefixed with
    ``console_prefix``) and warnings.  Put back on
    exit.  (detectron2's setup_logger sends everything to the console, hence this.)"""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    to_file = logging.FileHandler(path, mode="w", encoding="utf-8")
    to_file.setFormatter(
        logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%H:%M:%S")
    )
    to_console = logging.StreamHandler()
    to_console.setFormatter(logging.Formatter(console_prefix + "%(message)s"))
    # (fvcore's checkpointer warns that an ImageNet backbone file lacks the FPN and the heads:
    # expected, and the backbone itself is loaded strictly; the log file keeps the list)
    to_console.addFilter(
        lambda r: (
            r.name in (app, "detectron2.utils.events")
            or (r.levelno >= logging.WARNING and r.name != "fvcore.common.checkpoint")
        )
    )
    saved = []
    for name in LOGGERS + ((app,) if app else ()):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, logger.handlers[:]))
        logger.handlers = [to_file, to_console]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for logger, level, propagate, handlers in saved:
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate
        to_file.close()


class DemoTrainer(DistillTrainer):
    """DistillTrainer + DEMO.OPTIMIZER + metrics.json and progress every ``log_period``."""

    log_period = 10

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
        optimizer = torch.optim.AdamW(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )
        return maybe_add_gradient_clipping(cfg, optimizer)

    def build_hooks(self):
        kept = [
            h
            for h in super().build_hooks()
            if not isinstance(h, (hooks.EvalHook, hooks.PeriodicWriter))
        ]
        writers = [
            CommonMetricPrinter(self.cfg.SOLVER.MAX_ITER),
            JSONWriter(
                os.path.join(self.cfg.OUTPUT_DIR, METRICS_FILE), window_size=self.log_period
            ),
        ]
        return kept + [hooks.PeriodicWriter(writers, period=self.log_period)]


def train_detector(cfg, seed: int, log_period: int) -> str:
    """Train one model with the demo trainer; returns its final checkpoint.  Its config.yaml is
    the config without the DEMO node and with an empty MODEL.WEIGHTS (plain detectron2's)."""
    plain = without_demo_keys(cfg).clone()
    plain.defrost()
    plain.MODEL.WEIGHTS = ""
    atomic_write_text(plain.dump(), os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    # deterministic kernels where torch has them (the others only warn): one seed, one result
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed_all_rng(seed)
    DemoTrainer.log_period = max(1, int(log_period))
    trainer = DemoTrainer(cfg)
    trainer.resume_or_load(resume=False)
    # the same random streams from the first iteration on, whatever model building drew
    seed_all_rng(seed)
    trainer.train()
    return os.path.join(cfg.OUTPUT_DIR, FINAL_WEIGHTS)


def train_detector_job(
    cfg, seed: int, log_period: int, log_file: str, name: str, dataset_root: Optional[str] = None
) -> str:
    """:func:`train_detector` in a fresh process started by :func:`nd_common.jobs.run_jobs`
    (the demo's two students side by side, the ablation's runs): registers the embedded data
    again and logs into its own file, its progress lines prefixed with ``[name]``."""
    register_embedded_dataset(dataset_root)
    with log_to_file(log_file, console_prefix=f"  [{name}] "):
        return train_detector(cfg, seed, log_period)
