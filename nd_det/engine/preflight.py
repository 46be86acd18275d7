"""Checks of a distillation set-up that need no model: run before any worker starts, so that a
wrong path or a mismatching file is reported in seconds and nothing is written."""
from detectron2.config import CfgNode

from ..losses import ClassMeansError, load_class_means
from ..modeling.meta_arch import check_num_classes
from ..modeling.teacher import build_teacher_cfg, check_teacher_weights_exist

__all__ = ["preflight_distill"]


def preflight_distill(cfg: CfgNode, need_class_means: bool = True) -> None:
    """Teacher config resolvable, same number of classes, teacher weights present (local
    paths), and the class-means file readable with NUM_CLASSES + 1 valid rows (when ND is on)."""
    if not cfg.MODEL.DISTILL.LOSSES:
        return
    teacher_cfg = build_teacher_cfg(cfg)
    check_num_classes(cfg, teacher_cfg)
    check_teacher_weights_exist(cfg)
    if need_class_means and "nd" in cfg.MODEL.DISTILL.LOSSES:
        try:
            load_class_means(cfg.MODEL.DISTILL.CLASS_MEANS,
                             num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)
        except ClassMeansError as e:
            raise ClassMeansError(f"MODEL.DISTILL.CLASS_MEANS: {e}") from None
