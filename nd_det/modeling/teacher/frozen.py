"""The frozen teacher detector: one class owns everything about it.

:class:`FrozenTeacher` is built from the *distillation* config (the student's config with its
``MODEL.DISTILL`` node).  It owns

* the teacher's validated config: ``TEACHER_CONFIG`` (a yacs ``.yaml`` or a LazyConfig ``.py``,
  model-zoo name or file; :mod:`.source`) + ``TEACHER_OPTS``, on the student's device, as a plain
  R-CNN (Faster, Mask or Cascade), or for a one-stage student a one-stage detector of its kind
  (RetinaNet, FCOS: :mod:`..anchor_rows`); same number of classes as the student; an input
  format the student's images can be converted to; a square padding (ViTDet) no smaller than
  the student's images (:mod:`.input_size`); ``TEACHER_AUTOCAST``.  Built inside
  ``torch.device("meta")`` the same class runs all of it with no weights and no memory, before
  anything real is built;
* the weights check, the build, the freeze (eval mode, no gradients) and the strict load: a
  missing key, an unexpected key (beyond a small allowed set) or a shape mismatch stops the run,
  because a silently half-loaded teacher distils noise for days before anyone notices;
* its identity (the metadata that ties a class-means table to it);
* its own preprocessing of the student's images (pixel mean/std, RGB <-> BGR, padding);
* its backbone features and, from ONE box head (a Cascade's stage: :mod:`.box_stage`), the
  RoI embeddings / class logits on given boxes, or for a one-stage teacher its classification
  tower's output / per-class logits at given anchors, under its precision context, always
  without autograd.  A Mask R-CNN teacher is used for its boxes: its mask head never runs here.

DistillRCNN, the class-mean extraction, teacher evaluation, the pre-flight checks, the benchmark
and the demo all use this class.
"""

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, ImageList
from torch import nn

from ...errors import ConfigError
from ...utils.modules import freeze
from ...utils.precision import AUTOCAST_DTYPES
from ..anchor_rows import AnchorRows, dense_head_outputs, dense_shapes
from ..shapes import ModelShapes, shapes_of
from ..student_checkpoint import StrictCheckpointer
from ..weights import local_weights_file
from .box_stage import box_stage, num_box_stages
from .input_size import check_input_size
from .source import TeacherSource
from .spec import TeacherSpec, as_teacher_spec
from .weights import (
    allowed_unexpected,
    resolve_teacher_weights,
    teacher_identity,
    unreadable_weights,
    weights_mismatch_message,
)

__all__ = ["TeacherNeeds", "TeacherOutputs", "FrozenTeacher"]

logger = logging.getLogger(__name__)

_AUTOCAST_VALUES = ("", "float32", *AUTOCAST_DTYPES)


@dataclass(frozen=True)
class TeacherNeeds:
    """Which teacher outputs beyond its backbone features a step needs."""

    embeddings: bool = False  # box-head output on the sampled boxes (ND); one-stage: tower
    logits: bool = False  # box-predictor class logits on them (KD, DKD); one-stage: per anchor

    @property
    def box_head(self) -> bool:
        return self.embeddings or self.logits


@dataclass
class TeacherOutputs:
    """The teacher's side of one step (no autograd graph)."""

    features: dict[str, torch.Tensor]
    embeddings: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None


class FrozenTeacher:
    """The frozen teacher of a distillation config (see the module docstring).

    ``FrozenTeacher(cfg)`` (a yacs distillation config, or a :class:`TeacherSpec` of explicit
    values: :meth:`from_values`) reads the teacher's config once, builds, checks, freezes and loads;
    ``load_weights=False`` leaves the random weights (call :meth:`load_weights` later:
    DistillRCNN first builds the terms, so that a wrong class-means table is reported before
    large weights are read; the terms built next draw their random values after the teacher's,
    as every published run did).  Loaded at once, it draws no random values (the strict load
    replaces them all).  Built inside ``with torch.device("meta")`` it has shapes and
    state-dict keys but no memory: the checks before a run.  The teacher is not an
    ``nn.Module``: whoever holds one keeps it out of ``state_dict()``, ``parameters()`` and DDP,
    and moves it with :meth:`apply`.
    """

    def __init__(self, cfg: "CfgNode | TeacherSpec", load_weights: bool = True):
        spec = self.spec = as_teacher_spec(cfg)  # a yacs config: its MODEL.DISTILL values
        self.source = TeacherSource(spec)
        self.cfg = self.source.config  # a yacs CfgNode, or the LazyConfig of a .py teacher
        self.flip_channels = _needs_flip(spec.student_format, self.source.input_format)
        self.autocast = spec.autocast
        if self.autocast not in _AUTOCAST_VALUES:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_AUTOCAST {self.autocast!r}: use one of {_AUTOCAST_VALUES}"
            )
        self.weights = ""  # resolved by load_weights
        self.model = freeze(self.source.build(initialize=not load_weights))
        self.one_stage = spec.one_stage  # "" (an R-CNN), or its one-stage class
        self.box_head, self.box_predictor, self.box_stage = _checked_model(spec, self.model)
        self.identity = teacher_identity(spec)
        if not self.one_stage and num_box_stages(self.model.roi_heads) > 1:  # means per stage
            self.identity["teacher_box_stage"] = self.box_stage
        self.weights_loaded = False
        if load_weights:
            self.load_weights()

    @classmethod
    def from_values(cls, load_weights: bool = False, **values) -> "FrozenTeacher":
        """The teacher of explicit values (the fields of :class:`TeacherSpec`): what a LazyConfig
        names, ``L(FrozenTeacher.from_values)(config=..., weights=...,
        student_format="${..input_format}", num_classes="${..roi_heads.num_classes}")``.  Its
        weights are not loaded unless ``load_weights``: the DistillRCNN holding it loads them
        once its terms are built."""
        return cls(TeacherSpec(**values), load_weights=load_weights)

    # ------------------------------------------------------------------ weights
    def load_weights(self) -> None:
        """Load the teacher's weights (downloaded once if a URL); fail unless every key matched
        in name and shape, or when the file is a student distilled from this very teacher (the
        ``distilled_from`` record of its DistillTrainer checkpoint): no teacher of this run.  On
        the meta device this checks names and shapes only: the checks before a run."""
        self.weights = resolve_teacher_weights(self.spec)
        local = local_weights_file("MODEL.DISTILL.TEACHER_WEIGHTS", self.weights)
        checkpointer = StrictCheckpointer(
            self.model,
            unreadable=functools.partial(unreadable_weights, self.weights),
            allowed_unexpected=allowed_unexpected,
        )
        record = checkpointer.load(local).get("distilled_from") or {}
        if checkpointer.mismatch:
            raise ConfigError(weights_mismatch_message(self.weights, checkpointer.mismatch))
        if record.get("teacher_config") == self.identity["teacher_config"]:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_WEIGHTS {self.weights} is a student distilled from this "
                "very teacher, not the teacher: give the teacher's own checkpoint"
            )
        freeze(self.model)
        self.weights_loaded = True
        logger.info(
            "Teacher loaded from %s (config %s)", self.weights, self.identity["teacher_config"]
        )

    # ------------------------------------------------------------------ device and precision
    @property
    def device(self) -> torch.device:
        return self.model.device

    def apply(self, fn) -> "FrozenTeacher":
        """Apply ``fn`` to the model's tensors (what ``nn.Module._apply`` does for ``.to()``)."""
        self.model._apply(fn)
        return self

    def precision(self):
        """The teacher's autocast context (``MODEL.DISTILL.TEACHER_AUTOCAST``): "" inherits the
        surrounding precision, "float32" forces full precision, "bfloat16"/"float16" autocast."""
        if self.autocast == "":
            return contextlib.nullcontext()
        if self.autocast == "float32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.autocast])

    # ------------------------------------------------------------------ evaluation
    def evaluation_cfg(self, cfg: CfgNode) -> CfgNode:
        """The yacs config detectron2's evaluation loop reads for this teacher: its own (a yacs
        teacher), or the student's with the teacher's input format (a LazyConfig teacher: its
        images resized as the student's test images); the datasets, loader workers and an output
        folder of the run ``cfg``; masks evaluated only when the student predicts them."""
        run_cfg = (cfg if self.source.lazy else self.cfg).clone()
        run_cfg.defrost()
        run_cfg.INPUT.FORMAT = self.source.input_format
        run_cfg.MODEL.MASK_ON = cfg.MODEL.MASK_ON  # the evaluator's tasks (build_evaluator)
        run_cfg.DATASETS.TEST = cfg.DATASETS.TEST
        run_cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "teacher")
        run_cfg.DATALOADER.NUM_WORKERS = cfg.DATALOADER.NUM_WORKERS
        run_cfg.freeze()
        return run_cfg

    # ------------------------------------------------------------------ what it computes
    @property
    def num_classes(self) -> int:
        return int((self.model if self.one_stage else self.model.roi_heads).num_classes)

    @property
    def embedding_dim(self) -> int:
        """Width of the box-head output (the RoI embedding ND compares); of a one-stage
        teacher, of its classification tower."""
        dim = self.shapes.embedding_dim
        if dim is None:
            raise ConfigError("the teacher's box head gives no flat RoI embedding: use a FC head")
        return dim

    @property
    def shapes(self) -> ModelShapes:
        """Backbone levels and RoI embedding width (what the distillation terms check)."""
        if self.one_stage:
            return dense_shapes(self.model.backbone, self.model.head)
        return shapes_of(self.model.backbone, self.model.roi_heads, self.box_head)

    def preprocess(self, images: list[torch.Tensor]) -> ImageList:
        """The teacher's ImageList from images in the STUDENT's channel order, already on the
        teacher's device: channels reversed when the formats differ, its own mean/std and
        padding."""
        if self.flip_channels:
            images = [x.flip(0) for x in images]
        # GeneralizedRCNN's own, not an override of the teacher's meta-architecture; the images
        # are on its device already, so its device copy moves nothing
        return GeneralizedRCNN.preprocess_image(self.model, [{"image": x} for x in images])

    @torch.no_grad()
    def features(self, images: ImageList) -> dict[str, torch.Tensor]:
        """Backbone (FPN) levels."""
        with self.precision():
            return self.model.backbone(images.tensor)

    @torch.no_grad()
    def box_embeddings(self, features: dict[str, torch.Tensor], boxes: list[Boxes]) -> torch.Tensor:
        """Output of the chosen box head (after its last fc + ReLU) on ``boxes`` (one Boxes per
        image)."""
        heads = self.model.roi_heads
        with self.precision():
            pooled = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
            return self.box_head(pooled)

    @torch.no_grad()
    def dense_head(self, features: dict[str, torch.Tensor]):
        """A one-stage teacher's classification branch on its head's levels: the tower's
        output and the class logits, per level (the box branch never runs)."""
        maps = [features[f] for f in self.model.head_in_features]
        with self.precision():
            return dense_head_outputs(self.model.head, maps)

    @torch.no_grad()
    def outputs(
        self, images: ImageList, where: "list[Boxes] | AnchorRows", needs: TeacherNeeds
    ) -> TeacherOutputs:
        """What a distillation step needs of the teacher on ``images``: its features, and when
        ``needs`` says so the box-head embeddings / logits on the sampled boxes ``where`` (an
        R-CNN), or the tower's output at the positive anchors / the logits of the counted
        anchors of :class:`AnchorRows` ``where`` (a one-stage teacher)."""
        features = self.features(images)
        out = TeacherOutputs(features=features)
        if self.one_stage:
            if needs.box_head:
                towers, logits = self.dense_head(features)
                out.embeddings = where.embeddings(towers) if needs.embeddings else None
                out.logits = where.logits(logits) if needs.logits else None
            return out
        if needs.box_head:
            out.embeddings = self.box_embeddings(features, where)
            if needs.logits:  # (R, NUM_CLASSES + 1) class logits of the chosen box predictor
                with self.precision():
                    out.logits = self.box_predictor(out.embeddings)[0]
        return out


# ---------------------------------------------------------------------- the checks
_CLASSES_KEY = {  # the key of the student's classes, by kind
    "": "MODEL.ROI_HEADS.NUM_CLASSES",
    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
    "FCOS": "model.num_classes",
}


def _checked_model(spec: TeacherSpec, model: nn.Module):
    """The checks of the built teacher (real or on the meta device): a two-stage R-CNN (a
    one-stage detector of the student's class for a one-stage student) with the student's
    classes, the chosen box stage, its square padding against the student's images.  Returns
    (box head, box predictor, stage) of the chosen stage (None, None, 0 for a one-stage one)."""
    name, kind = spec.config, spec.one_stage
    heads = getattr(model, "roi_heads", None)
    if kind:  # the terms compare their anchors, classification towers and logits
        kinds = {c.__name__ for c in type(model).__mro__}
        fits = kind in kinds and isinstance(getattr(model, "head", None), RetinaNetHead)
        need = f"a {kind} teacher for a {kind} student"
    else:
        fits = isinstance(heads, StandardROIHeads) and model.proposal_generator is not None
        need = "a Faster, Mask or Cascade R-CNN (an RPN and StandardROIHeads or CascadeROIHeads)"
    if not fits:
        raise ConfigError(f"the teacher ({name}) is a {type(model).__name__}: use {need}")
    classes = int((model if kind else heads).num_classes)
    if classes != spec.num_classes:
        raise ConfigError(
            f"the teacher ({name}) has {classes} classes, {_CLASSES_KEY.get(kind, kind)} "
            f"{spec.num_classes}: use a teacher of these classes (TEACHER_OPTS)"
        )
    picked = (None, None, 0) if kind else box_stage(heads, spec.cascade_stage)
    check_input_size(spec.max_input_size, model.backbone, name)
    return picked


def _needs_flip(student_format: str, teacher_format: str) -> bool:
    """True when the teacher needs the channel order reversed (RGB <-> BGR)."""
    if student_format != teacher_format and {student_format, teacher_format} != {"RGB", "BGR"}:
        raise ConfigError(
            f"INPUT.FORMAT {student_format} (student) vs {teacher_format} (teacher):"
            " only RGB and BGR can be bridged; give both the same format"
        )
    return student_format != teacher_format
