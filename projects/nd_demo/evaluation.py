"""What the demo measures of each model: COCO box AP on the val split, parameters, inference time.

* AP / AP50 / AP75: detectron2's COCOEvaluator (pycocotools) through ``DistillTrainer.test``; the
  detections are kept in ``<output folder>/inference/<dataset>/coco_instances_results.json``
  (the figure draws them).  A model with no detection at all gets AP 0 (pycocotools' NaN would
  break the table), and the result says so.
* params: every parameter of the evaluated module (for the distilled student: the exported
  student alone, without the training-only distillation modules).
* inference ms/image: mean wall time of ``model([image])`` in eval mode under ``torch.no_grad``
  over the val images, one image per call, after one untimed warm-up call.  The only number of
  the table that changes between runs (it depends on the machine's load).
"""
import contextlib
import io
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from fvcore.nn import parameter_count

from nd_det.engine import DistillTrainer

__all__ = ["ModelScore", "box_metrics", "inference_ms_per_image", "score_model",
           "RESULTS_FILE_NAME"]

logger = logging.getLogger(__name__)

RESULTS_FILE_NAME = "coco_instances_results.json"
_METRICS = ("AP", "AP50", "AP75")


@dataclass
class ModelScore:
    """One row of the demo's table (before naming)."""

    AP: float
    AP50: float
    AP75: float
    params: int
    inference_ms_per_image: float
    detections_file: str
    no_detections: bool = False


@torch.no_grad()
def inference_ms_per_image(cfg: CfgNode, model: torch.nn.Module) -> float:
    """Mean milliseconds of one ``model([image])`` call over the images of DATASETS.TEST[0]."""
    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
    was_training = model.training
    model.eval()
    times = []
    try:
        for index, batch in enumerate(loader):
            start = time.perf_counter()
            model(batch)
            if index > 0:  # the first call is a warm-up
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    if not times:
        raise ValueError(f"{cfg.DATASETS.TEST[0]} has fewer than two images: nothing to time")
    return 1000.0 * sum(times) / len(times)


def box_metrics(cfg: CfgNode, model: torch.nn.Module) -> Tuple[Dict[str, float], bool]:
    """AP, AP50, AP75 of ``model`` on ``cfg.DATASETS.TEST[0]`` (all 0.0 when it detects
    nothing, where pycocotools gives NaN), and whether it detected nothing.  The evaluator writes
    its files under ``cfg.OUTPUT_DIR``; pycocotools' own prints go to the log, not the console."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        results = DistillTrainer.test_per_dataset(cfg, model)
    logger.info("pycocotools output:\n%s", captured.getvalue())
    metrics = dict(results[cfg.DATASETS.TEST[0]]["bbox"])
    no_detections = all(not math.isfinite(metrics.get(m, float("nan"))) for m in _METRICS)
    return {m: (0.0 if no_detections else float(metrics[m])) for m in _METRICS}, no_detections


def score_model(cfg: CfgNode, model: torch.nn.Module) -> ModelScore:
    """AP, parameters and inference time of ``model`` (built from ``cfg``, weights loaded)."""
    values, no_detections = box_metrics(cfg, model)
    return ModelScore(
        **values,
        params=parameter_count(model)[""],
        inference_ms_per_image=inference_ms_per_image(cfg, model),
        detections_file=os.path.join(cfg.OUTPUT_DIR, "inference", cfg.DATASETS.TEST[0],
                                     RESULTS_FILE_NAME),
        no_detections=no_detections,
    )
