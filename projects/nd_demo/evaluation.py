"""What the demo measures of each model (the columns of docs/demo.md's table): COCO box AP of
detectron2's COCOEvaluator through ``DistillTrainer.test``, fvcore's parameter count, and the
mean wall time of ``model([image])`` in eval mode, one image per call, after one warm-up call.
"""

import contextlib
import io
import logging
import math
import os
import time

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_context
from fvcore.nn import parameter_count

from nd_det.engine import DistillTrainer

logger = logging.getLogger(__name__)

_METRICS = ("AP", "AP50", "AP75")


@torch.no_grad()
def inference_ms_per_image(cfg: CfgNode, model: torch.nn.Module) -> float:
    """Mean milliseconds of one ``model([image])`` call over the images of DATASETS.TEST[0]."""
    times = []
    with inference_context(model):
        for index, batch in enumerate(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])):
            start = time.perf_counter()
            model(batch)
            if index > 0:  # the first call is a warm-up
                times.append(time.perf_counter() - start)
    return 1000.0 * sum(times) / len(times)


def box_metrics(cfg: CfgNode, model: torch.nn.Module) -> tuple[dict[str, float], bool]:
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


def score_model(cfg: CfgNode, model: torch.nn.Module) -> dict:
    """AP, AP50, AP75, params, inference_ms_per_image, no_detections and detections_file (the
    COCO results the evaluation wrote) of ``model``, built from ``cfg`` with its weights."""
    metrics, no_detections = box_metrics(cfg, model)
    return dict(
        metrics,
        params=parameter_count(model)[""],
        inference_ms_per_image=inference_ms_per_image(cfg, model),
        no_detections=no_detections,
        detections_file=os.path.join(
            cfg.OUTPUT_DIR, "inference", cfg.DATASETS.TEST[0], "coco_instances_results.json"
        ),
    )
