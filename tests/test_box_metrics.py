"""nd_common.evaluation.box_metrics: pycocotools' AP of a model on DATASETS.TEST[0]; a model
that detects nothing scores 0.0 (not NaN) and says so."""

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from nd_common.evaluation import box_metrics

from nd_det.data import register_coco_dataset

from .helpers.tiny_coco import write_tiny_coco


class _Oracle(torch.nn.Module):
    """Answers every image with its ground-truth boxes (score 1), or with nothing."""

    def __init__(self, dataset: str, empty: bool):
        super().__init__()
        self.truth = {d["image_id"]: d["annotations"] for d in DatasetCatalog.get(dataset)}
        self.empty = empty

    def forward(self, batch):
        outputs = []
        for item in batch:
            annotations = [] if self.empty else self.truth[item["image_id"]]
            boxes = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
            ]
            found = Instances((item["height"], item["width"]))
            found.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            found.scores = torch.ones(len(boxes))
            found.pred_classes = torch.tensor(
                [a["category_id"] for a in annotations], dtype=torch.int64
            )
            outputs.append({"instances": found})
        return outputs


def _cfg(tmp_path, name):
    json_path, image_dir = write_tiny_coco(tmp_path / "data", num_images=3, num_classes=2)
    register_coco_dataset(name, json_path, image_dir, replace=True)
    cfg = get_cfg()
    cfg.DATASETS.TEST = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    return cfg


def test_ground_truth_scores_100_and_no_detection_scores_0(tmp_path):
    cfg = _cfg(tmp_path, "nd_det_test_box_metrics")
    name = cfg.DATASETS.TEST[0]
    metrics, nothing = box_metrics(cfg, _Oracle(name, empty=False).eval())
    assert not nothing and set(metrics) == {"AP", "AP50", "AP75"}
    assert all(abs(value - 100.0) < 1e-6 for value in metrics.values()), metrics
    metrics, nothing = box_metrics(cfg, _Oracle(name, empty=True).eval())
    assert nothing and metrics == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
