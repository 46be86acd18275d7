"""What the demo measures of each model (the columns of docs/demo.md's table): COCO box AP
(:func:`nd_common.evaluation.box_metrics`), fvcore's parameter count, and the mean wall time of
``model([image])`` in eval mode, one image per call, after one warm-up call.
"""

import os
import time

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_context
from fvcore.nn import parameter_count
from nd_common.evaluation import box_metrics


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
