"""The distillation terms of a detector student (DistillRCNN, or a one-stage DistillRetinaNet /
DistillFCOS): the terms of :mod:`nd_det.distill`, configured from ``MODEL.DISTILL`` (``LOSSES``
names them, in order; ``MODEL.DISTILL.<NAME>`` holds each one's parameters) and from the two
detectors' shapes (FPN levels, RoI embedding or classification-tower widths)."""

import logging
from typing import Optional

import torch
from detectron2.config import CfgNode
from torch import nn

from ..class_means import ClassMeans, load_class_means, metadata_mismatches
from ..config import num_classes
from ..distill import TermContext, available_distill_terms, build_distill_terms, check_term_names
from ..errors import ConfigError, DataError
from .anchor_rows import dense_shapes
from .bn_groups import abf_bn_group
from .shapes import ModelShapes, shapes_of

__all__ = [
    "check_distill_loss_names",
    "class_means_table",
    "build_detection_terms",
]

logger = logging.getLogger(__name__)


def check_distill_loss_names(names) -> list[str]:
    """``MODEL.DISTILL.LOSSES`` as a list, checked: known names, none twice."""
    return check_term_names(names, available_distill_terms(), "MODEL.DISTILL.LOSSES")


def class_means_table(cfg: CfgNode, dim: int) -> ClassMeans:
    """MODEL.DISTILL.CLASS_MEANS, read and checked (NUM_CLASSES + 1 rows of ``dim`` values); a
    bad file is one DataError naming the key."""
    try:
        return load_class_means(
            cfg.MODEL.DISTILL.CLASS_MEANS, num_classes=num_classes(cfg) + 1, dim=dim
        )
    except DataError as e:
        raise DataError(f"MODEL.DISTILL.CLASS_MEANS: {e}") from None


def _terms(
    cfg: CfgNode,
    student: ModelShapes,
    teacher: ModelShapes,
    class_means: Optional[torch.Tensor],
    bn_group=None,
    one_stage: bool = False,
) -> nn.ModuleList:
    names = check_distill_loss_names(cfg.MODEL.DISTILL.LOSSES)
    if "nd" in names and not one_stage:
        for who, shapes in (("student", student), ("teacher", teacher)):
            if shapes.embedding_dim is None:
                raise ConfigError(
                    f"ND needs a {who} box head that outputs flat RoI embeddings: set its "
                    "MODEL.ROI_BOX_HEAD.NAME FastRCNNConvFCHead with NUM_FC >= 1"
                )
    context = TermContext(
        config_prefix="MODEL.DISTILL",
        student_embedding_dim=student.embedding_dim,
        teacher_embedding_dim=teacher.embedding_dim,
        student_levels={k: v.channels for k, v in student.levels.items()},
        teacher_levels={k: v.channels for k, v in teacher.levels.items()},
        class_means=class_means,
        num_classes=num_classes(cfg),
        embedding_key="MODEL.FPN.OUT_CHANNELS" if one_stage else "MODEL.ROI_BOX_HEAD.FC_DIM",
        bn_group=bn_group,
        sigmoid_logits=one_stage,
    )
    nodes = {n: cfg.MODEL.DISTILL[n.upper()] for n in names}
    return build_distill_terms(names, nodes, context)


def build_detection_terms(cfg: CfgNode, student: nn.Module, teacher) -> nn.ModuleList:
    """One term per name of ``MODEL.DISTILL.LOSSES``, in order, for the student's backbone and
    ROI heads (``student.backbone``, ``student.roi_heads``; a one-stage student's ``head``) and
    the FrozenTeacher ``teacher``; ND's class means are read from MODEL.DISTILL.CLASS_MEANS."""
    means = None
    if "nd" in cfg.MODEL.DISTILL.LOSSES:
        table = class_means_table(cfg, teacher.embedding_dim)
        for line in metadata_mismatches(table, teacher.identity):
            logger.warning(
                "MODEL.DISTILL.CLASS_MEANS=%s may come from another teacher (%s). Class means "
                "differ strongly between teachers: re-extract them for this one.",
                cfg.MODEL.DISTILL.CLASS_MEANS,
                line,
            )
        means = table.means

    def bn_group(images: int):
        return abf_bn_group(images, int(cfg.SOLVER.IMS_PER_BATCH))

    one_stage = hasattr(student, "head")
    if one_stage:
        student_shapes = dense_shapes(student.backbone, student.head)
    else:
        student_shapes = shapes_of(student.backbone, student.roi_heads)
    return _terms(cfg, student_shapes, teacher.shapes, means, bn_group, one_stage)
