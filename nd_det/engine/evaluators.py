"""The evaluator of a test set, chosen by the dataset's ``evaluator_type`` metadata as
detectron2's own ``tools/train_net.py`` chooses it (that choice lives in a script, not in
detectron2's library, hence this table).  DistillRCNN students predict instances, so the
instance-level evaluators are the ones a run can use: COCO (boxes, and masks when the student
predicts them), LVIS, Pascal VOC and Cityscapes instances; a panoptic COCO set is evaluated on
its instances.  A set registered without an ``evaluator_type`` is evaluated as COCO (detectron2's
COCOEvaluator converts any dataset to COCO's format)."""

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    COCOEvaluator,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
)

from ..errors import ConfigError

__all__ = ["EVALUATORS", "evaluator_kind", "build_evaluator"]

# evaluator_type -> (dataset name, tasks, output folder) -> evaluator
EVALUATORS = {
    "coco": lambda name, tasks, folder: COCOEvaluator(name, tasks=tasks, output_dir=folder),
    "coco_panoptic_seg": lambda name, tasks, folder: COCOEvaluator(name, tasks, output_dir=folder),
    "lvis": lambda name, tasks, folder: LVISEvaluator(name, tasks=tasks, output_dir=folder),
    "pascal_voc": lambda name, tasks, folder: PascalVOCDetectionEvaluator(name),
    "cityscapes_instance": lambda name, tasks, folder: CityscapesInstanceEvaluator(name),
}


def evaluator_kind(dataset_name: str) -> str:
    """The dataset's ``evaluator_type`` ("coco" when it has none); one a detector cannot be
    evaluated with is one ConfigError (checked before training, for DATASETS.TEST)."""
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if kind not in EVALUATORS:
        raise ConfigError(
            f"DATASETS.TEST {dataset_name!r} has evaluator_type {kind!r}: a detector "
            f"is evaluated with one of {sorted(EVALUATORS)}"
        )
    return kind


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """The evaluator of ``dataset_name``; COCO-style ones evaluate the tasks the config's heads
    predict (detectron2 would take them from the predictions: a Mask R-CNN teacher's masks on a
    dataset without masks)."""
    tasks = ("bbox",) + (("segm",) if cfg.MODEL.MASK_ON else ())
    return EVALUATORS[evaluator_kind(dataset_name)](dataset_name, tasks, output_folder)
