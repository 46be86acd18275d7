"""DistillRCNN: a detectron2 GeneralizedRCNN student distilled from a frozen teacher detector.

One training step (see ARCHITECTURE.md):

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
import contextlib
import logging
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from .distill_terms import DistillInputs, build_distill_terms
from .teacher import build_teacher_cfg, check_teacher_weights_exist, freeze, load_teacher_weights
from .teacher import teacher_identity as make_teacher_identity

__all__ = ["DistillRCNN", "DistillConfigError"]

logger = logging.getLogger(__name__)

_CHANNEL_ORDERS = {"RGB", "BGR"}
_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class DistillConfigError(ValueError):
    """The distillation set-up is inconsistent; the message names the key and the fix."""


@META_ARCH_REGISTRY.register()
class DistillRCNN(GeneralizedRCNN):
    """Faster/Mask R-CNN student + frozen teacher + distillation terms."""

    @configurable
    def __init__(
        self,
        *,
        teacher: Optional[nn.Module],
        teacher_flip_channels: bool,
        distill_terms: nn.ModuleList,
        teacher_autocast: str = "",
        **kwargs,
    ):
        """
        Args:
            teacher: the frozen teacher GeneralizedRCNN, or None when no term is configured.
            teacher_flip_channels: True when the student's input format (RGB/BGR) is the
                reverse of the teacher's, so the teacher sees its own channel order.
            distill_terms: the distillation terms (their trainable parts, e.g. ReviewKD's ABF
                modules, belong to the student side and are saved in its checkpoints).
            teacher_autocast: "" (inherit the surrounding precision), "float32" (force full
                precision), "bfloat16" or "float16" (run the teacher under autocast).
            kwargs: GeneralizedRCNN's arguments, for the student.
        """
        super().__init__(**kwargs)
        # a list hides the teacher from nn.Module bookkeeping (state_dict, parameters, DDP)
        self._teacher_holder: List[Optional[nn.Module]] = [teacher]
        self.teacher_flip_channels = teacher_flip_channels
        self.distill_losses = distill_terms
        self.teacher_autocast = teacher_autocast
        if distill_terms and teacher is None:
            raise DistillConfigError("distillation terms were given without a teacher")
        self._needs_teacher_embeddings = any(t.needs_teacher_embeddings for t in distill_terms)
        self._needs_teacher_logits = any(t.needs_teacher_logits for t in distill_terms)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["teacher_autocast"] = _check_autocast(cfg.MODEL.DISTILL.TEACHER_AUTOCAST)
        if not cfg.MODEL.DISTILL.LOSSES:
            ret.update(teacher=None, teacher_flip_channels=False, distill_terms=nn.ModuleList())
            return ret
        roi_heads = ret["roi_heads"]
        if type(roi_heads) is not StandardROIHeads:
            raise DistillConfigError(
                f"MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME}: DistillRCNN supports "
                "StandardROIHeads (Faster/Mask R-CNN); use MODEL.ROI_HEADS.NAME StandardROIHeads."
            )
        if roi_heads.train_on_pred_boxes:
            raise DistillConfigError(
                "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES=True is not supported by DistillRCNN "
                "(the teacher must see the sampled proposals); set it to False."
            )

        teacher_cfg = build_teacher_cfg(cfg)
        check_num_classes(cfg, teacher_cfg)
        flip = _check_input_formats(cfg, teacher_cfg)
        weights = check_teacher_weights_exist(cfg)  # a wrong path fails here, in seconds
        from detectron2.modeling import build_model

        teacher = freeze(build_model(teacher_cfg))
        student = SimpleNamespace(backbone=ret["backbone"], roi_heads=roi_heads)
        # builds every term; the ND term loads and validates the class-means file now, before
        # the (possibly downloaded) teacher weights are read
        terms = build_distill_terms(cfg, student, teacher, make_teacher_identity(cfg))
        load_teacher_weights(teacher, weights)
        logger.info("Teacher loaded from %s (config %s); distillation terms: %s", weights,
                    cfg.MODEL.DISTILL.TEACHER_CONFIG, list(cfg.MODEL.DISTILL.LOSSES))
        ret.update(teacher=teacher, teacher_flip_channels=flip, distill_terms=terms)
        return ret

    # ---------------------------------------------------------------- teacher bookkeeping
    @property
    def teacher(self) -> Optional[nn.Module]:
        return self._teacher_holder[0]

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never leaves eval mode
        return self

    # ---------------------------------------------------------------- training step
    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if not self.training:
            return self.inference(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("DistillRCNN training needs 'instances' (ground truth) in the inputs")

        images, teacher_images = self._preprocess_pair(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        losses = dict(losses)

        sampled = self.roi_heads.label_and_sample_proposals(proposals, gt_instances)
        embeddings, logits, box_losses = self._student_box_branch(features, sampled)
        losses.update(box_losses)
        losses.update(self.roi_heads._forward_mask(features, sampled))
        losses.update(self.roi_heads._forward_keypoint(features, sampled))

        if self.distill_losses:
            inputs = self._distill_inputs(features, embeddings, logits, teacher_images, sampled)
            for term in self.distill_losses:
                losses["loss_" + term.name] = term(inputs)

        if self.vis_period > 0:
            storage = get_event_storage()
            if storage.iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, sampled)
        return losses

    def _preprocess_pair(self, batched_inputs):
        """Student and teacher ImageLists from ONE host-to-device copy of each image."""
        raw = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = ImageList.from_tensors(
            [(x - self.pixel_mean) / self.pixel_std for x in raw],
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        teacher = self.teacher
        if teacher is None:
            return images, None
        if self.teacher_flip_channels:
            raw = [x.flip(0) for x in raw]
        teacher_images = ImageList.from_tensors(
            [(x - teacher.pixel_mean) / teacher.pixel_std for x in raw],
            teacher.backbone.size_divisibility,
            padding_constraints=teacher.backbone.padding_constraints,
        )
        return images, teacher_images

    def _student_box_branch(self, features, sampled: List[Instances]):
        """The student's box branch on the sampled RoIs, run once: embeddings, class logits and
        the detector's box losses (what StandardROIHeads._forward_box computes in training)."""
        heads = self.roi_heads
        pooled = heads.box_pooler(
            [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in sampled]
        )
        embeddings = heads.box_head(pooled)
        predictions = heads.box_predictor(embeddings)
        return embeddings, predictions[0], heads.box_predictor.losses(predictions, sampled)

    def _distill_inputs(self, features, embeddings, logits, teacher_images: ImageList,
                        sampled: List[Instances]) -> DistillInputs:
        """The student's outputs of this step plus the teacher's on the same images and RoIs."""
        t_features, t_embeddings, t_logits = self._teacher_outputs(teacher_images, sampled)
        return DistillInputs(
            labels=torch.cat([p.gt_classes for p in sampled]),
            student_embeddings=embeddings,
            student_logits=logits,
            student_features=features,
            teacher_features=t_features,
            teacher_embeddings=t_embeddings,
            teacher_logits=t_logits,
        )

    def _teacher_context(self):
        if self.teacher_autocast == "":
            return contextlib.nullcontext()
        if self.teacher_autocast == "float32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.teacher_autocast])

    @torch.no_grad()
    def _teacher_outputs(self, teacher_images: ImageList, sampled: List[Instances]):
        """Teacher FPN levels, and box-head embeddings / class logits of the sampled boxes when
        a term needs them (else None)."""
        teacher = self.teacher
        with self._teacher_context():
            t_features = teacher.backbone(teacher_images.tensor)
            t_embeddings = t_logits = None
            if self._needs_teacher_embeddings or self._needs_teacher_logits:
                heads = teacher.roi_heads
                pooled = heads.box_pooler(
                    [t_features[f] for f in heads.box_in_features],
                    [p.proposal_boxes for p in sampled],
                )
                t_embeddings = heads.box_head(pooled)
                if self._needs_teacher_logits:
                    t_logits = heads.box_predictor(t_embeddings)[0]
        return t_features, t_embeddings, t_logits


def _check_autocast(value: str) -> str:
    allowed = {"", "float32", *_AUTOCAST_DTYPES}
    if value not in allowed:
        raise DistillConfigError(
            f"MODEL.DISTILL.TEACHER_AUTOCAST={value!r}: use one of {sorted(allowed)}"
        )
    return value


def check_num_classes(cfg, teacher_cfg) -> None:
    s, t = cfg.MODEL.ROI_HEADS.NUM_CLASSES, teacher_cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if s != t:
        raise DistillConfigError(
            f"the student has MODEL.ROI_HEADS.NUM_CLASSES={s} but the teacher "
            f"({cfg.MODEL.DISTILL.TEACHER_CONFIG}) has {t}: they must predict the same classes. "
            "Use a teacher trained on this dataset, or fix NUM_CLASSES (MODEL.DISTILL.TEACHER_OPTS "
            "overrides the teacher's config)."
        )


def _check_input_formats(cfg, teacher_cfg) -> bool:
    """True when the teacher needs the channel order reversed (RGB <-> BGR)."""
    s, t = cfg.INPUT.FORMAT, teacher_cfg.INPUT.FORMAT
    if s == t:
        return False
    if {s, t} <= _CHANNEL_ORDERS:
        logger.info("Student reads %s, teacher expects %s: channels are reversed for the teacher",
                    s, t)
        return True
    raise DistillConfigError(
        f"INPUT.FORMAT {s!r} (student) and {t!r} (teacher): only RGB/BGR differences can be "
        "bridged; give both models the same input format."
    )
