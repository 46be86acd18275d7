"""COCO box AP of a detector on its config's first test set, as the demo and the ablation report
it: detectron2's COCOEvaluator through ``DistillTrainer.test_per_dataset`` (pycocotools)."""

import contextlib
import io
import logging
import math

import torch
from detectron2.config import CfgNode

from nd_det.engine import DistillTrainer

logger = logging.getLogger(__name__)

METRICS = ("AP", "AP50", "AP75")


def box_metrics(cfg: CfgNode, model: torch.nn.Module) -> tuple[dict[str, float], bool]:
    """AP, AP50, AP75 of ``model`` on ``cfg.DATASETS.TEST[0]`` (all 0.0 when it detects
    nothing, where pycocotools gives NaN), and whether it detected nothing.  The evaluator writes
    its files under ``cfg.OUTPUT_DIR``; pycocotools' own prints go to the log, not the console."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        results = DistillTrainer.test_per_dataset(cfg, model)
    logger.info("pycocotools output:\n%s", captured.getvalue())
    metrics = dict(results[cfg.DATASETS.TEST[0]]["bbox"])
    no_detections = all(not math.isfinite(metrics.get(m, float("nan"))) for m in METRICS)
    return {m: (0.0 if no_detections else float(metrics[m])) for m in METRICS}, no_detections
