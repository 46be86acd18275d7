"""A distillation model written as a LazyConfig: ``L(DistillRCNN)(...)`` of detectron2's
GeneralizedRCNN arguments (the student), ``teacher=L(FrozenTeacher.from_values)(...)`` and
``distill_terms=L(DistillTerms)(...)``::

    model.teacher = L(FrozenTeacher.from_values)(
        config="COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
        weights="detectron2://...",
        student_format="${..input_format}",
        num_classes="${..roi_heads.num_classes}",
        max_input_size=1333,
    )
    model.distill_terms = distill_terms(
        losses=["reviewkd", "nd"],
        class_means="class_means/coco_faster_rcnn_R_101_FPN_3x.pth",
        reviewkd=dict(weight=1.4),
        nd=dict(weight=1.0),
    )

:class:`DistillTerms` holds the keys of the yacs node ``MODEL.DISTILL`` in lower case
(``losses``, ``class_means``, one dict per term: ``nd=dict(weight=..., include_background=...)``)
with the same defaults (:func:`nd_det.config.add_distill_config`; :func:`distill_terms` writes
them all into the node, so that each can be overridden in detectron2's dotted form), and builds
the terms exactly as a yacs config does (``build_detection_terms``) once DistillRCNN has built
the student: the terms need both models' shapes.  The student alone, as plain detectron2 loads
it, is :func:`plain_student_model`.
"""

import copy
import inspect

from detectron2.config import CfgNode, LazyCall, get_cfg
from detectron2.modeling import FCOS, GeneralizedRCNN, RetinaNet
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.utils.registry import locate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..config import add_distill_config, merge_config
from ..errors import ConfigError
from .dense_meta_arch import DistillFCOS, DistillRetinaNet
from .distill_terms import build_detection_terms
from .meta_arch import DistillRCNN

__all__ = [
    "DistillTerms",
    "distill_terms",
    "distill_model_target",
    "plain_student_model",
    "TERMS_KEY",
    "PLAIN_TARGETS",
]

TERMS_KEY = "model.distill_terms"
# the distillation models and the plain detectron2 model of their student
PLAIN_TARGETS = {DistillRCNN: GeneralizedRCNN, DistillRetinaNet: RetinaNet, DistillFCOS: FCOS}


class DistillTerms:
    """The distillation terms of a LazyConfig DistillRCNN (see the module docstring).

    ``ims_per_batch``: the images of one training step over all processes (ReviewKD's ABF
    BatchNorm groups, ``MODEL.DISTILL.REVIEWKD.BN_IMAGES``); a LazyConfig interpolates
    ``${...dataloader.train.total_batch_size}``."""

    def __init__(self, losses=(), class_means: str = "", ims_per_batch: int = 16, **terms):
        self.losses = [str(name) for name in losses]
        self.class_means = str(class_means)
        self.ims_per_batch = int(ims_per_batch)
        self.terms = {
            name: OmegaConf.to_container(p) if OmegaConf.is_config(p) else dict(p)
            for name, p in terms.items()
        }

    def __len__(self) -> int:
        return len(self.losses)

    def distill_cfg(self, num_classes: int) -> CfgNode:
        """These values as the yacs keys the detection terms read (``MODEL.DISTILL``, the
        classes, the batch); a key ``MODEL.DISTILL`` lacks is one ConfigError."""
        cfg = add_distill_config(get_cfg())
        opts = [
            "MODEL.DISTILL.LOSSES",
            self.losses,
            "MODEL.ROI_HEADS.NUM_CLASSES",
            num_classes,
            "SOLVER.IMS_PER_BATCH",
            self.ims_per_batch,
        ]
        if self.class_means:
            opts += ["MODEL.DISTILL.CLASS_MEANS", self.class_means]
        for name, params in self.terms.items():
            node = cfg.MODEL.DISTILL.get(name.upper(), {})
            for key, value in params.items():
                if isinstance(node.get(key.upper()), float) and type(value) is int:
                    value = float(value)  # weight=1 for 1.0
                opts += [f"MODEL.DISTILL.{name.upper()}.{key.upper()}", value]
        merge_config(cfg, opts, TERMS_KEY)
        cfg.freeze()
        return cfg

    def __call__(self, student: nn.Module, teacher) -> nn.ModuleList:
        """The terms for the built ``student`` (its backbone and ROI heads, or a one-stage
        student's head) and ``teacher``."""
        if hasattr(student, "head"):  # DistillRetinaNet, DistillFCOS
            return build_detection_terms(self.distill_cfg(student.num_classes), student, teacher)
        heads = student.roi_heads
        if type(heads) is not StandardROIHeads or heads.train_on_pred_boxes:
            raise ConfigError(
                "model.roi_heads: a DistillRCNN student needs StandardROIHeads with "
                "train_on_pred_boxes False (the teacher runs on its sampled proposals)"
            )
        return build_detection_terms(self.distill_cfg(heads.num_classes), student, teacher)


def distill_terms(
    losses=(),
    class_means: str = "",
    ims_per_batch="${...dataloader.train.total_batch_size}",
    **terms,
):
    """``L(DistillTerms)(...)`` holding every key of the term nodes of ``MODEL.DISTILL`` at its
    default, ``terms`` (one dict per term) merged over them."""
    defaults = add_distill_config(get_cfg()).MODEL.DISTILL
    nodes = {
        name.lower(): {key.lower(): value for key, value in node.items()}
        for name, node in defaults.items()
        if isinstance(node, CfgNode)
    }
    for name, params in terms.items():
        nodes.setdefault(name, {}).update(params)
    return LazyCall(DistillTerms)(
        losses=list(losses), class_means=class_means, ims_per_batch=ims_per_batch, **nodes
    )


def distill_model_target(model_cfg: DictConfig):
    """The class or function a LazyConfig's ``model`` node builds (its ``_target_``)."""
    target = model_cfg.get("_target_")
    return locate(target) if isinstance(target, str) else target


def plain_student_model(model_cfg: DictConfig) -> DictConfig:
    """The student of a LazyConfig DistillRCNN (DistillRetinaNet, DistillFCOS) as plain
    detectron2 builds it: a copy of the ``model`` node with GeneralizedRCNN (RetinaNet, FCOS) as
    its target, without the distillation model's own arguments (``teacher``,
    ``distill_terms``, ...), its interpolations resolved (it stands alone)."""
    student = copy.deepcopy(model_cfg)
    target = distill_model_target(student)
    if target in PLAIN_TARGETS:
        student._target_ = PLAIN_TARGETS[target]
        plain = set(inspect.signature(student._target_.__init__).parameters)
        for key in set(inspect.signature(target.__init__).parameters) - plain:
            student.pop(key, None)  # teacher, distill_terms, mechanism_period, ...
    OmegaConf.resolve(student)  # values taken from the rest of the config, e.g. ${..num_classes}
    return student
