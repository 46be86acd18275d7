"""The evaluator of a test set is chosen by the dataset's ``evaluator_type``, as detectron2's
tools/train_net.py chooses it: a Pascal VOC set registered with detectron2's own
``register_pascal_voc`` and marked ``evaluator_type "pascal_voc"`` as detectron2's builtin VOC
sets are (a small VOC folder written here) is evaluated by
PascalVOCDetectionEvaluator, and a model that answers with the ground truth scores AP50 100."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_pascal_voc
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from nd_det.engine import DistillTrainer
from nd_det.errors import ConfigError

CLASSES = ("tree", "car")
# image id -> boxes (class, x0, y0, x1, y1) in VOC's 1-based pixel coordinates
BOXES = {
    "000001": [("tree", 10, 12, 40, 50), ("car", 60, 20, 90, 44)],
    "000002": [("car", 5, 5, 30, 30)],
    "000003": [("tree", 20, 30, 70, 90), ("tree", 75, 10, 110, 40)],
}


def _write_voc(root):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for image_id, boxes in BOXES.items():
        Image.new("RGB", (128, 96), (90, 120, 60)).save(root / "JPEGImages" / f"{image_id}.jpg")
        objects = "".join(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for name, x0, y0, x1, y1 in boxes
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>128</width><height>96</height><depth>3</depth></size>"
            f"{objects}</annotation>"
        )
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(BOXES) + "\n")


class _Oracle(torch.nn.Module):
    """Answers every image with its ground-truth boxes, score 1."""

    def __init__(self, dataset: str):
        super().__init__()
        self.truth = {d["image_id"]: d["annotations"] for d in DatasetCatalog.get(dataset)}

    def forward(self, batch):
        outputs = []
        for item in batch:
            annotations = self.truth[item["image_id"]]
            boxes = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
            ]
            found = Instances((item["height"], item["width"]))
            found.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
            found.scores = torch.ones(len(boxes))
            found.pred_classes = torch.tensor([a["category_id"] for a in annotations])
            outputs.append({"instances": found})
        return outputs


def test_pascal_voc_set_is_evaluated_by_the_voc_evaluator(tmp_path):
    _write_voc(tmp_path / "voc")
    name = "nd_det_test_voc_tiny"
    if name not in DatasetCatalog:
        register_pascal_voc(name, str(tmp_path / "voc"), "test", 2007, CLASSES)
        # what detectron2's own registration of VOC (data/datasets/builtin.py) adds
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"
    cfg = get_cfg()
    cfg.DATASETS.TEST = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    assert isinstance(DistillTrainer.build_evaluator(cfg, name), PascalVOCDetectionEvaluator)
    results = DistillTrainer.test(cfg, _Oracle(name).eval())
    assert set(results["bbox"]) == {"AP", "AP50", "AP75"}
    assert results["bbox"]["AP50"] == pytest.approx(100.0)


def test_a_set_without_evaluator_type_is_coco_and_an_unusable_one_is_one_line(tmp_path):
    plain, semantic = "nd_det_test_eval_plain", "nd_det_test_eval_semantic"
    for name in (plain, semantic):
        if name not in DatasetCatalog:
            DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(plain).thing_classes = list(CLASSES)
    MetadataCatalog.get(semantic).set(evaluator_type="sem_seg")
    cfg = get_cfg()
    cfg.OUTPUT_DIR = ""
    assert isinstance(DistillTrainer.build_evaluator(cfg, plain, str(tmp_path)), COCOEvaluator)
    with pytest.raises(ConfigError) as error:
        DistillTrainer.build_evaluator(cfg, semantic, str(tmp_path))
    assert "'nd_det_test_eval_semantic' has evaluator_type 'sem_seg'" in str(error.value)
