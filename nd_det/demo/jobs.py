"""Training one detector with the demo's trainer, in this process or as a job of its own.

:func:`train_detector` trains one model (teacher or student) from its demo config and returns
the final checkpoint.  :func:`train_detector_job` does the same in a fresh process started by
:func:`nd_det.utils.parallel.run_jobs` (the demo trains its two students side by side, the
ablation its many runs): it re-registers the embedded data, logs into its own file and prints
its progress lines with the stage's ETA and the ETA of the whole plan.
"""
import logging
import os
from typing import Optional

from detectron2.config import CfgNode

from ..data import register_embedded_dataset
from .backbone_init import check_backbone_loaded
from .configs import write_plain_cfg
from .progress import DemoClock, Stage
from .run_log import log_to_file
from .trainer import DemoTrainer, seed_everything

__all__ = ["FINAL_WEIGHTS", "train_detector", "train_detector_job"]

FINAL_WEIGHTS = "model_final.pth"


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
                       dataset_root: Optional[str] = None, quiet: bool = False) -> str:
    """:func:`train_detector` in a process of its own (see the module docstring).

    ``units_per_iter`` prices one iteration and ``tail_units`` what the plan still has to do
    after this job (DemoClock's units), so its lines show the plan's ETA; ``quiet`` keeps the
    progress lines in ``log_file`` only."""
    import nd_det.modeling  # noqa: F401  (registers DistillRCNN and the backbones here)

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
            if not quiet and line.startswith("  ["):
                print(line, flush=True)

        clock = DemoClock(stages, emit=emit)
        return train_detector(cfg, clock, stage, seed, log_period)
