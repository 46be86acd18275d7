"""One-stage students: detectron2's RetinaNet and FCOS distilled from a frozen teacher of the
same kind, as DistillRCNN distils a GeneralizedRCNN (docs/one_stage.md).

One training step:

1. the student preprocesses, runs its backbone and its head as detectron2 wrote them (the
   classification tower's outputs are recorded on the way), labels its anchors
   (``label_anchors``) and computes its own losses;
2. the teacher (eval mode, ``torch.no_grad``, its own pixel mean/std/format) runs its backbone
   and, when a term needs it, its classification branch on the same images;
3. the terms see the FPN levels (ReviewKD), the class logits of every anchor the focal loss
   counts (KD, per-class sigmoid) and the towers' outputs at the positive anchors with their
   labels (ND, against the teacher's class means extracted the same way):
   :class:`~nd_det.modeling.anchor_rows.AnchorRows`.

The teacher is held outside the module tree as in DistillRCNN; in eval mode the model is
exactly its student (detectron2's inference).
"""

import logging
from types import SimpleNamespace

import torch
from detectron2.config import configurable
from detectron2.modeling import FCOS, META_ARCH_REGISTRY, RetinaNet
from detectron2.utils.events import get_event_storage
from torch import nn

from ..distill import DistillInputs
from ..errors import ConfigError
from .anchor_rows import AnchorRows, anchor_layout, anchors_per_location, recorded_outputs
from .distill_terms import build_detection_terms
from .mechanism import put_mechanism
from .teacher import FrozenTeacher, TeacherNeeds
from .teacher.source import on_meta_device

__all__ = ["DistillRetinaNet", "DistillFCOS", "DenseDistillMixin"]

logger = logging.getLogger(__name__)


class DenseDistillMixin:
    """The distillation of a one-stage detector (RetinaNet, FCOS: anything that labels its
    anchors with ``label_anchors`` and has a RetinaNetHead-like ``head``)."""

    def _init_distill(self, teacher, distill_terms, mechanism_period: int) -> None:
        if distill_terms and teacher is None:
            raise ConfigError(f"{type(self).__name__}: distillation terms need a teacher")
        if not isinstance(distill_terms, nn.Module):  # a LazyConfig's builder of the terms
            distill_terms = distill_terms(self, teacher)
        if teacher is not None:
            ours, theirs = anchor_layout(self), anchor_layout(teacher.model)
            if ours != theirs:  # (level strides, anchors per location, padding)
                raise ConfigError(
                    f"the teacher ({teacher.spec.config}) has anchors {theirs}, the student "
                    f"{ours} (level strides, anchors per location, padding): make them equal"
                )
            if not teacher.weights_loaded and not on_meta_device():
                teacher.load_weights()  # after the terms, as DistillRCNN does
        self.teacher = teacher  # not an nn.Module: out of state_dict, parameters and DDP
        self.distill_terms = distill_terms
        self.mechanism_period = mechanism_period
        self.teacher_needs = TeacherNeeds(
            embeddings=any(t.needs_teacher_embeddings for t in distill_terms),
            logits=any(t.needs_teacher_logits for t in distill_terms),
        )

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if getattr(self, "teacher", None) is not None:
            self.teacher.apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "teacher", None) is not None:
            self.teacher.model.eval()  # the teacher never leaves eval mode
        return self

    # ---------------------------------------------------------------- training step
    def forward(self, batched_inputs):
        if not self.training or not self.distill_terms:
            return super().forward(batched_inputs)  # detectron2's own step and inference
        step = self._student_step(batched_inputs)
        losses = step.losses
        inputs = self._distill_inputs(step)
        for term in self.distill_terms:
            losses["loss_" + term.name] = term(inputs)
        period = self.mechanism_period
        if period and (get_event_storage().iter + 1) % period == 0:
            self.put_mechanism(inputs, step.rows)
        return losses

    @torch.no_grad()
    def distill_step_inputs(self, batched_inputs):
        """What one training step hands its terms, without computing them: the teacher's
        ImageList, the step's :class:`AnchorRows` and the :class:`DistillInputs` (no autograd
        graph).  Call it in training mode inside an EventStorage."""
        step = self._student_step(batched_inputs)
        return step.teacher_images, step.rows, self._distill_inputs(step)

    def _student_step(self, batched_inputs) -> SimpleNamespace:
        """The student's part of a step: its head run once, its anchors labelled, its losses
        (what ``forward_training`` computes), and the teacher's ImageList of the same images."""
        if "instances" not in batched_inputs[0]:
            raise ValueError(f"{type(self).__name__} training needs 'instances' in the inputs")
        raw = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = self.preprocess_image([{"image": x} for x in raw])
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        maps = [features[f] for f in self.head_in_features]
        with recorded_outputs(self.head.cls_subnet) as towers:
            predictions = self.head(maps)
        anchors = self.anchor_generator(maps)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt)
        dims = [self.num_classes, 4, 1][: len(predictions)]  # FCOS adds its centerness
        logits, deltas, *rest = self._transpose_dense_predictions(predictions, dims)
        return SimpleNamespace(
            losses=self.losses(anchors, logits, gt_labels, deltas, gt_boxes, *rest),
            teacher_images=self.teacher.preprocess(raw),
            features=features,
            towers=list(towers),
            logit_maps=predictions[0],
            rows=AnchorRows(torch.stack(gt_labels), self.num_classes, anchors_per_location(self)),
        )

    def _distill_inputs(self, step: SimpleNamespace) -> DistillInputs:
        rows = step.rows
        teacher = self.teacher.outputs(step.teacher_images, rows, self.teacher_needs)
        return DistillInputs(
            labels=rows.positive_labels,
            student_embeddings=rows.embeddings(step.towers),
            student_logits=rows.logits(step.logit_maps) if self.teacher_needs.logits else None,
            student_features=step.features,
            teacher_features=teacher.features,
            teacher_embeddings=teacher.embeddings,
            teacher_logits=teacher.logits,
        )

    def put_mechanism(self, inputs: DistillInputs, rows: AnchorRows) -> None:
        """ND's mechanism in this step over the positive anchors (:mod:`.mechanism`)."""
        put_mechanism(
            self.distill_terms,
            inputs,
            lambda: rows.embeddings(self.teacher.dense_head(inputs.teacher_features)[0]),
        )


def _distill_arguments(cfg, ret: dict) -> dict:
    """DistillRetinaNet's own arguments from a yacs distillation config."""
    if not cfg.MODEL.DISTILL.LOSSES:
        return dict(teacher=None, distill_terms=nn.ModuleList(), mechanism_period=0)
    teacher = FrozenTeacher(cfg, load_weights=False)
    student = SimpleNamespace(backbone=ret["backbone"], head=ret["head"])
    terms = build_detection_terms(cfg, student, teacher)  # reads the class means first
    logger.info("Distillation terms: %s", list(cfg.MODEL.DISTILL.LOSSES))
    return dict(
        teacher=teacher, distill_terms=terms, mechanism_period=cfg.MODEL.DISTILL.MECHANISM_PERIOD
    )


@META_ARCH_REGISTRY.register()
class DistillRetinaNet(DenseDistillMixin, RetinaNet):
    """detectron2's RetinaNet + frozen RetinaNet teacher + distillation terms (yacs:
    ``MODEL.META_ARCHITECTURE: DistillRetinaNet`` with ``MODEL.DISTILL``; LazyConfig:
    ``L(DistillRetinaNet)(teacher=..., distill_terms=..., **RetinaNet's arguments)``)."""

    @configurable
    def __init__(self, *, teacher=None, distill_terms=(), mechanism_period: int = 20, **kwargs):
        super().__init__(**kwargs)
        self._init_distill(teacher, distill_terms or nn.ModuleList(), mechanism_period)

    @classmethod
    def from_config(cls, cfg):
        ret = RetinaNet.from_config(cfg)
        ret.update(_distill_arguments(cfg, ret))
        return ret


@META_ARCH_REGISTRY.register()
class DistillFCOS(DenseDistillMixin, FCOS):
    """detectron2's FCOS + frozen FCOS teacher + distillation terms; a LazyConfig only, as
    detectron2's FCOS (``L(DistillFCOS)(teacher=..., distill_terms=..., **FCOS's arguments)``;
    configs/COCO-Distill/FCOS_R50_from_R101_nd.py)."""

    def __init__(self, *, teacher=None, distill_terms=(), mechanism_period: int = 20, **kwargs):
        super().__init__(**kwargs)
        self._init_distill(teacher, distill_terms or nn.ModuleList(), mechanism_period)
