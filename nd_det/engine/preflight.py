"""Checks of a distillation run that need no model: run in the parent process before any worker
starts, so that a wrong path or a mismatching file is reported in seconds and nothing is
written."""
from detectron2.config import CfgNode

from ..losses import ClassMeansError, load_class_means
from ..modeling.distill_terms import check_distill_loss_names
from ..modeling.meta_arch import check_student_heads
from ..modeling.teacher import FrozenTeacher

__all__ = ["preflight_distill"]


def preflight_distill(cfg: CfgNode, need_class_means: bool = True) -> None:
    """Loss names known, student heads usable, teacher config resolvable with the same number of
    classes, teacher weights present (local paths), and the class-means file readable with
    NUM_CLASSES + 1 valid rows (when ND is on)."""
    if not cfg.MODEL.DISTILL.LOSSES:
        return
    check_distill_loss_names(cfg.MODEL.DISTILL.LOSSES)
    check_student_heads(cfg)
    FrozenTeacher.check(cfg)
    if need_class_means and "nd" in cfg.MODEL.DISTILL.LOSSES:
        try:
            load_class_means(cfg.MODEL.DISTILL.CLASS_MEANS,
                             num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)
        except ClassMeansError as e:
            raise ClassMeansError(f"MODEL.DISTILL.CLASS_MEANS: {e}") from None
