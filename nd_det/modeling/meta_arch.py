"""DistillRCNN: a detectron2 GeneralizedRCNN student distilled from a frozen teacher detector.

One training step (docs/architecture.md):

1. the student preprocesses, runs its backbone, RPN and RoI sampling as usual;
2. the student's box head runs ONCE on the sampled RoIs; its embeddings feed both the detector
   losses and the distillation terms;
3. the teacher (eval mode, ``torch.no_grad``, its own pixel mean/std/format) runs its backbone
   and, when a term needs it, its box head on the SAME sampled boxes;
4. each configured term (``MODEL.DISTILL.LOSSES``) adds ``loss_<name>`` to the loss dict.

The teacher is held outside the module tree: it is not in ``state_dict()``, ``parameters()``
(hence not in the optimizer or DDP) or training checkpoints, yet it follows ``.to(device)``.
In eval mode DistillRCNN is exactly its student: ``GeneralizedRCNN.inference``.
"""

import logging
from types import SimpleNamespace
from typing import Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ..distill import DistillInputs
from ..errors import ConfigError
from .distill_terms import build_detection_terms
from .mechanism import put_mechanism
from .teacher import FrozenTeacher, TeacherNeeds
from .teacher.source import on_meta_device

__all__ = ["DistillRCNN", "check_student_heads"]

logger = logging.getLogger(__name__)


def check_student_heads(cfg) -> None:
    """The student's ROI heads must be ones DistillRCNN can feed to the teacher: the sampled
    proposals as they are (no Cascade stages, no training on predicted boxes)."""
    if cfg.MODEL.ROI_HEADS.NAME != "StandardROIHeads" or cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES:
        raise ConfigError(
            "DistillRCNN students need MODEL.ROI_HEADS.NAME StandardROIHeads and "
            "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES False"
        )


@META_ARCH_REGISTRY.register()
class DistillRCNN(GeneralizedRCNN):
    """Faster/Mask R-CNN student + frozen teacher + distillation terms."""

    @configurable
    def __init__(
        self,
        *,
        teacher: Optional[FrozenTeacher],
        distill_terms,
        mechanism_period: int = 20,
        **kwargs,
    ):
        """
        Args:
            teacher: the frozen teacher, or None when no term is configured; its weights are
                loaded here, after the terms (a wrong class-means table is named before large
                weights are read), unless loaded already or built on the meta device.
            distill_terms: the distillation terms (their trainable parts, e.g. ReviewKD's ABF
                modules, belong to the student side and are saved in its checkpoints), or a
                builder of them called with the built student and the teacher (a LazyConfig's
                terms: they need both models' shapes; :mod:`nd_det.modeling.lazy`).
            mechanism_period: every this many iterations ND's mechanism goes into the
                EventStorage (:meth:`put_mechanism`); 0 never.
            kwargs: GeneralizedRCNN's arguments, for the student.
        """
        super().__init__(**kwargs)
        if distill_terms and teacher is None:
            raise ConfigError("DistillRCNN: distillation terms need a teacher; give teacher=")
        if not isinstance(distill_terms, nn.Module):
            distill_terms = distill_terms(self, teacher)
        if teacher is not None and not teacher.weights_loaded and not on_meta_device():
            teacher.load_weights()  # the checks before a run build everything on the meta device
        # not an nn.Module: the teacher stays out of state_dict, parameters and DDP
        self.teacher = teacher
        self.distill_terms = distill_terms
        self.mechanism_period = mechanism_period
        self.teacher_needs = TeacherNeeds(
            embeddings=any(t.needs_teacher_embeddings for t in distill_terms),
            logits=any(t.needs_teacher_logits for t in distill_terms),
        )

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.DISTILL.LOSSES:
            check_student_heads(cfg)  # before detectron2's heads assert their own details
        ret = super().from_config(cfg)
        if not cfg.MODEL.DISTILL.LOSSES:
            ret.update(teacher=None, distill_terms=nn.ModuleList(), mechanism_period=0)
            return ret
        teacher = FrozenTeacher(cfg, load_weights=False)
        student = SimpleNamespace(backbone=ret["backbone"], roi_heads=ret["roi_heads"])
        # builds every term; the ND term loads and validates the class-means file now, before
        # the (possibly downloaded) teacher weights are read
        terms = build_detection_terms(cfg, student, teacher)
        logger.info("Distillation terms: %s", list(cfg.MODEL.DISTILL.LOSSES))
        ret.update(
            teacher=teacher,
            distill_terms=terms,
            mechanism_period=cfg.MODEL.DISTILL.MECHANISM_PERIOD,
        )
        return ret

    # ---------------------------------------------------------------- teacher bookkeeping
    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher.apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.model.eval()  # the teacher never leaves eval mode
        return self

    # ---------------------------------------------------------------- training step
    def forward(self, batched_inputs: list[dict[str, torch.Tensor]]):
        if not self.training:
            return self.inference(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("DistillRCNN training needs 'instances' (ground truth) in the inputs")

        teacher_images, features, sampled, embeddings, logits, losses = self._student_step(
            batched_inputs
        )
        losses.update(self.roi_heads._forward_mask(features, sampled))
        losses.update(self.roi_heads._forward_keypoint(features, sampled))

        if self.distill_terms:
            inputs = self.distill_inputs(features, embeddings, logits, teacher_images, sampled)
            for term in self.distill_terms:
                losses["loss_" + term.name] = term(inputs)
            period = self.mechanism_period
            if period and (get_event_storage().iter + 1) % period == 0:
                self.put_mechanism(inputs, sampled)

        if self.vis_period > 0:
            storage = get_event_storage()
            if storage.iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, sampled)
        return losses

    def put_mechanism(self, inputs: DistillInputs, sampled: list[Instances]) -> None:
        """ND's mechanism in this step over the foreground RoIs (:mod:`.mechanism`); a run
        without ND runs the teacher's box head on the sampled boxes for it."""
        boxes = [p.proposal_boxes for p in sampled]
        put_mechanism(
            self.distill_terms,
            inputs,
            lambda: self.teacher.box_embeddings(inputs.teacher_features, boxes),
            inputs.labels < self.roi_heads.num_classes,
        )

    @torch.no_grad()
    def distill_step_inputs(self, batched_inputs: list[dict[str, torch.Tensor]]):
        """What one training step hands its distillation terms, without computing them: the
        teacher's ImageList, the sampled RoIs and the :class:`DistillInputs` (no autograd
        graph).  For measuring a step (the benchmark, ND's mechanism); call it in training mode
        inside an EventStorage (detectron2's RPN and RoI sampling log to it)."""
        teacher_images, features, sampled, embeddings, logits, _ = self._student_step(
            batched_inputs
        )
        inputs = self.distill_inputs(features, embeddings, logits, teacher_images, sampled)
        return teacher_images, sampled, inputs

    def _student_step(self, batched_inputs):
        """The student's part of a training step: its RPN, RoI sampling and box branch (run
        once) with their losses, and the teacher's ImageList of the same images."""
        images, teacher_images = self.preprocess_pair(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        sampled = self.roi_heads.label_and_sample_proposals(proposals, gt_instances)
        embeddings, logits, box_losses = self.student_box_branch(features, sampled)
        return teacher_images, features, sampled, embeddings, logits, {**losses, **box_losses}

    def preprocess_pair(self, batched_inputs):
        """Student and teacher ImageLists from ONE host-to-device copy of each image (the
        teacher's is None without distillation)."""
        raw = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = self.preprocess_image([{"image": x} for x in raw])  # moves nothing again
        if self.teacher is None:
            return images, None
        return images, self.teacher.preprocess(raw)

    def student_box_branch(self, features, sampled: list[Instances]):
        """The student's box branch on the sampled RoIs, run once: embeddings, class logits and
        the detector's box losses (what StandardROIHeads._forward_box computes in training)."""
        heads = self.roi_heads
        pooled = heads.box_pooler(
            [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in sampled]
        )
        embeddings = heads.box_head(pooled)
        predictions = heads.box_predictor(embeddings)
        return embeddings, predictions[0], heads.box_predictor.losses(predictions, sampled)

    def distill_inputs(
        self, features, embeddings, logits, teacher_images: ImageList, sampled: list[Instances]
    ) -> DistillInputs:
        """The student's outputs of this step plus the teacher's on the same images and RoIs."""
        teacher = self.teacher.outputs(
            teacher_images, [p.proposal_boxes for p in sampled], self.teacher_needs
        )
        return DistillInputs(
            labels=torch.cat([p.gt_classes for p in sampled]),
            student_embeddings=embeddings,
            student_logits=logits,
            student_features=features,
            teacher_features=teacher.features,
            teacher_embeddings=teacher.embeddings,
            teacher_logits=teacher.logits,
        )
