"""DistillTrainer: detectron2's DefaultTrainer with COCO evaluation for DistillRCNN runs."""
import logging
import os
from collections import OrderedDict

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model

from ..modeling.teacher import build_teacher
from ..student_export import plain_student_cfg, student_state_dict

__all__ = ["DistillTrainer", "StudentCheckpointer"]

logger = logging.getLogger(__name__)


class StudentCheckpointer(DetectionCheckpointer):
    """Loads the student part of any checkpoint (DistillRCNN training checkpoints included)
    into a plain GeneralizedRCNN, without "unexpected key" noise about distillation modules."""

    def _load_model(self, checkpoint):
        checkpoint["model"] = student_state_dict(checkpoint["model"])
        return super()._load_model(checkpoint)


class DistillTrainer(DefaultTrainer):
    """DefaultTrainer for DistillRCNN: the optimizer, DDP and checkpoints see the student (and
    the distillation terms' trainable modules) only; the teacher rides along frozen."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def evaluate_student(cls, cfg, weights: str) -> OrderedDict:
        """COCO evaluation of the student alone (no teacher, no class means needed)."""
        student_cfg = plain_student_cfg(cfg)
        model = build_model(student_cfg)
        StudentCheckpointer(model, save_dir=cfg.OUTPUT_DIR).load(weights)
        logger.info("Evaluating the student from %s", weights)
        return cls.test_per_dataset(student_cfg, model)

    @classmethod
    def evaluate_teacher(cls, cfg) -> OrderedDict:
        """COCO evaluation of the teacher of MODEL.DISTILL on the same test sets."""
        teacher, teacher_cfg = build_teacher(cfg)
        run_cfg = teacher_cfg.clone()
        run_cfg.defrost()
        run_cfg.DATASETS.TEST = cfg.DATASETS.TEST
        run_cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "teacher")
        run_cfg.DATALOADER.NUM_WORKERS = cfg.DATALOADER.NUM_WORKERS
        run_cfg.freeze()
        return cls.test_per_dataset(run_cfg, teacher)

    @classmethod
    def test_per_dataset(cls, cfg, model) -> OrderedDict:
        """``test`` that always returns {dataset: results} (detectron2 unwraps a single one)."""
        results = cls.test(cfg, model)
        if len(cfg.DATASETS.TEST) == 1:
            results = OrderedDict([(cfg.DATASETS.TEST[0], results)])
        return results
