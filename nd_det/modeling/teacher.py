"""The frozen teacher detector: one class owns everything about it.

:class:`FrozenTeacher` is built from the *distillation* config (the student's config with its
``MODEL.DISTILL`` node).  It owns

* the teacher's validated config: ``TEACHER_CONFIG`` (a model-zoo name or a yaml file) +
  ``TEACHER_OPTS``, on the student's device, as a plain ``GeneralizedRCNN``; same number of
  classes as the student; an input format the student's images can be converted to;
  ``TEACHER_AUTOCAST`` (:meth:`FrozenTeacher.check` runs all of it without building anything);
* the weights check, the build, the freeze (eval mode, no gradients) and the strict load: a
  missing key, an unexpected key (beyond a small allowed set) or a shape mismatch stops the run,
  because a silently half-loaded teacher distils noise for days before anyone notices;
* its identity (the metadata that ties a class-means table to it);
* its own preprocessing of the student's images (pixel mean/std, RGB <-> BGR, padding);
* its backbone features and its box-head embeddings / class logits on given boxes, under its
  precision context, always without autograd.

DistillRCNN, the class-mean extraction, teacher evaluation, the pre-flight checks, the benchmark
and the demo all use this class.
"""
import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.structures import Boxes, ImageList

from ..config import add_distill_config, merge_config
from ..errors import ConfigError
from ..utils.modules import freeze
from ..utils.precision import AUTOCAST_DTYPES
from ..utils.text import first_line
from .shapes import ModelShapes, shapes_of, state_shapes_from_config
from .student_checkpoint import (DISTILL_STATE_PREFIX, StrictCheckpointer, read_model_state,
                                 model_state_mismatch)
from .weights import local_weights_file

__all__ = [
    "TeacherNeeds",
    "TeacherOutputs",
    "FrozenTeacher",
    "resolve_teacher_weights",
    "teacher_identity",
]

logger = logging.getLogger(__name__)

_CHANNEL_ORDERS = {"RGB", "BGR"}
_AUTOCAST_VALUES = ("", "float32", *AUTOCAST_DTYPES)


@dataclass(frozen=True)
class TeacherNeeds:
    """Which teacher outputs beyond its backbone features a step needs."""

    embeddings: bool = False  # box-head output on the sampled boxes (ND)
    logits: bool = False  # box-predictor class logits on them (KD, DKD)

    @property
    def box_head(self) -> bool:
        return self.embeddings or self.logits


@dataclass
class TeacherOutputs:
    """The teacher's side of one step (no autograd graph)."""

    features: Dict[str, torch.Tensor]
    embeddings: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None


def _allowed_unexpected(key: str) -> bool:
    # keys a teacher file may carry that the built model does not have: old buffers and the
    # training-only modules of an nd-det student checkpoint (a distilled model used as teacher)
    return (key.startswith(DISTILL_STATE_PREFIX)
            or key.endswith(("num_batches_tracked", "pixel_mean", "pixel_std"))
            or "anchor_generator.cell_anchors" in key)


class FrozenTeacher:
    """The frozen teacher of a distillation config (see the module docstring).

    ``FrozenTeacher(cfg)`` validates, builds, freezes and loads; ``load_weights=False`` leaves
    the random weights (call :meth:`load_weights` later: DistillRCNN first checks the class
    means, so that a wrong table is reported before large weights are read).  The teacher is not
    an ``nn.Module``: whoever holds one keeps it out of ``state_dict()``, ``parameters()`` and
    DDP, and moves it with :meth:`apply`.
    """

    def __init__(self, cfg: CfgNode, load_weights: bool = True):
        self.cfg = self.teacher_config(cfg)
        self.flip_channels = _needs_flip(cfg, self.cfg)
        self.autocast = cfg.MODEL.DISTILL.TEACHER_AUTOCAST
        self._source_cfg = cfg
        self.weights = ""  # resolved by load_weights
        self.identity = teacher_identity(cfg)
        self.model = freeze(build_model(self.cfg))
        self.weights_loaded = False
        if load_weights:
            self.load_weights()

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def check(cfg: CfgNode) -> CfgNode:
        """Every check of the teacher that needs no model (its config and its weights file);
        returns the teacher's config."""
        teacher_cfg = FrozenTeacher.teacher_config(cfg)
        resolve_teacher_weights(cfg)
        return teacher_cfg

    @staticmethod
    def teacher_config(cfg: CfgNode) -> CfgNode:
        """The teacher's validated config (without looking at its weights file): its yaml file +
        TEACHER_OPTS, on the student's device."""
        # the teacher file may use nd-det backbones' keys
        teacher_cfg = add_distill_config(get_cfg())
        teacher_cfg.set_new_allowed(True)  # a teacher yaml from another project may carry its keys
        path = _teacher_config_file(cfg.MODEL.DISTILL.TEACHER_CONFIG)
        merge_config(teacher_cfg, path, f"MODEL.DISTILL.TEACHER_CONFIG {path}")
        teacher_cfg.set_new_allowed(False)
        merge_config(teacher_cfg, list(cfg.MODEL.DISTILL.TEACHER_OPTS),
                     "MODEL.DISTILL.TEACHER_OPTS")
        teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
        teacher_cfg.MODEL.WEIGHTS = ""
        # the teacher is always a plain detector, never a distiller itself
        if teacher_cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
            teacher_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
        teacher_cfg.freeze()
        s, t = cfg.MODEL.ROI_HEADS.NUM_CLASSES, teacher_cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if s != t:
            raise ConfigError(
                f"the student has MODEL.ROI_HEADS.NUM_CLASSES={s} but the teacher "
                f"({cfg.MODEL.DISTILL.TEACHER_CONFIG}) has {t}: they must predict the same "
                "classes. Use a teacher trained on this dataset, or fix NUM_CLASSES "
                "(MODEL.DISTILL.TEACHER_OPTS overrides the teacher's config)."
            )
        _needs_flip(cfg, teacher_cfg)
        value = cfg.MODEL.DISTILL.TEACHER_AUTOCAST
        if value not in _AUTOCAST_VALUES:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_AUTOCAST={value!r}: use one of {sorted(_AUTOCAST_VALUES)}"
            )
        return teacher_cfg

    # ------------------------------------------------------------------ weights
    @staticmethod
    def check_weights_file(cfg: CfgNode) -> str:
        """The teacher's weights file, before any model is built: downloaded now if a URL
        (detectron2's cache keeps it for the workers), read, and compared key by key with the
        teacher TEACHER_CONFIG describes (built on the meta device).  Returns the local path."""
        weights = resolve_teacher_weights(cfg)
        local = local_weights_file("MODEL.DISTILL.TEACHER_WEIGHTS", weights)
        try:
            state = read_model_state(local)
        except Exception as e:  # noqa: BLE001 - unreadable files fail in many exception types
            raise _unreadable(weights, first_line(e)) from None
        expected = state_shapes_from_config(FrozenTeacher.teacher_config(cfg),
                                            "the teacher (MODEL.DISTILL.TEACHER_CONFIG)")
        problems = model_state_mismatch(expected, state, _allowed_unexpected)
        if problems:
            raise ConfigError(_mismatch_message(weights, problems))
        return local

    def load_weights(self) -> None:
        """Load the teacher's weights (downloaded once if a URL) and fail unless every key
        matched; the model stays frozen."""
        self.weights = resolve_teacher_weights(self._source_cfg)
        local = local_weights_file("MODEL.DISTILL.TEACHER_WEIGHTS", self.weights)
        checkpointer = StrictCheckpointer(self.model,
                                          unreadable=functools.partial(_unreadable, self.weights),
                                          allowed_unexpected=_allowed_unexpected)
        checkpointer.load(local)
        if checkpointer.mismatch:
            raise ConfigError(_mismatch_message(self.weights, checkpointer.mismatch))
        freeze(self.model)
        self.weights_loaded = True
        logger.info("Teacher loaded from %s (config %s)", self.weights,
                    self.identity["teacher_config"])

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

    # ------------------------------------------------------------------ what it computes
    @property
    def num_classes(self) -> int:
        return int(self.model.roi_heads.num_classes)

    @property
    def embedding_dim(self) -> int:
        """Width of the box-head output (the RoI embedding ND compares)."""
        shape = self.model.roi_heads.box_head.output_shape
        if shape.height or shape.width:
            raise ConfigError(
                "the teacher's box head does not output flat RoI embeddings; ND needs "
                "MODEL.ROI_BOX_HEAD.NAME FastRCNNConvFCHead in the teacher's config")
        return int(shape.channels)

    @property
    def shapes(self) -> ModelShapes:
        """Backbone levels and RoI embedding width (what the distillation terms check)."""
        return shapes_of(self.model.backbone, self.model.roi_heads)

    def preprocess(self, images: List[torch.Tensor]) -> ImageList:
        """The teacher's ImageList from images in the STUDENT's channel order, already on the
        teacher's device: channels reversed when the formats differ, its own mean/std and
        padding."""
        if self.flip_channels:
            images = [x.flip(0) for x in images]
        # GeneralizedRCNN's own, not an override of the teacher's meta-architecture; the images
        # are on its device already, so its device copy moves nothing
        return GeneralizedRCNN.preprocess_image(self.model, [{"image": x} for x in images])

    @torch.no_grad()
    def features(self, images: ImageList) -> Dict[str, torch.Tensor]:
        """Backbone (FPN) levels."""
        with self.precision():
            return self.model.backbone(images.tensor)

    @torch.no_grad()
    def box_embeddings(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """Box-head output (after its last fc + ReLU) of ``boxes`` (one Boxes per image)."""
        heads = self.model.roi_heads
        with self.precision():
            pooled = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
            return heads.box_head(pooled)

    @torch.no_grad()
    def outputs(self, images: ImageList, boxes: List[Boxes], needs: TeacherNeeds) -> TeacherOutputs:
        """What a distillation step needs of the teacher on ``images`` and the sampled
        ``boxes``: its features, and box-head embeddings / logits when ``needs`` says so."""
        features = self.features(images)
        out = TeacherOutputs(features=features)
        if needs.box_head:
            out.embeddings = self.box_embeddings(features, boxes)
            if needs.logits:  # (R, NUM_CLASSES + 1) class logits of the box predictor
                with self.precision():
                    out.logits = self.model.roi_heads.box_predictor(out.embeddings)[0]
        return out


# ---------------------------------------------------------------------- helpers of the checks
def _unreadable(weights: str, why: str) -> ConfigError:
    return ConfigError(
        f"cannot load teacher weights MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: {why}. Check "
        "that the file is a complete detectron2 checkpoint.")


def _mismatch_message(weights: str, problems: str) -> str:
    return (f"teacher weights {weights!r} do not match the teacher built from "
            f"MODEL.DISTILL.TEACHER_CONFIG ({problems}). Use the checkpoint of that exact "
            "architecture, or fix TEACHER_CONFIG / TEACHER_OPTS to describe it.")


def _teacher_config_file(name: str) -> str:
    """A path for TEACHER_CONFIG: an existing file, or a detectron2 model-zoo config name."""
    if not name:
        raise ConfigError(
            "MODEL.DISTILL.TEACHER_CONFIG is empty: set it to a detectron2 model-zoo name such as "
            "'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml' or to a yaml file."
        )
    if os.path.isfile(name):
        return name
    from detectron2 import model_zoo  # it needs pkg_resources: loaded only when a name is given

    try:
        return model_zoo.get_config_file(name)
    except RuntimeError:
        raise ConfigError(
            f"MODEL.DISTILL.TEACHER_CONFIG={name!r} is neither an existing file nor a detectron2 "
            "model-zoo config name (e.g. 'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml')."
        ) from None


def _needs_flip(cfg: CfgNode, teacher_cfg: CfgNode) -> bool:
    """True when the teacher needs the channel order reversed (RGB <-> BGR)."""
    s, t = cfg.INPUT.FORMAT, teacher_cfg.INPUT.FORMAT
    if s == t:
        return False
    if {s, t} <= _CHANNEL_ORDERS:
        return True
    raise ConfigError(
        f"INPUT.FORMAT {s!r} (student) and {t!r} (teacher): only RGB/BGR differences can be "
        "bridged; give both models the same input format."
    )


def resolve_teacher_weights(cfg: CfgNode) -> str:
    """TEACHER_WEIGHTS, or the model-zoo URL of TEACHER_CONFIG when that is empty; a local path
    must exist and be readable."""
    weights = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    name = cfg.MODEL.DISTILL.TEACHER_CONFIG
    if not weights and not os.path.isfile(name):
        from detectron2 import model_zoo

        try:
            weights = model_zoo.get_checkpoint_url(name)
        except RuntimeError:
            weights = ""
    if not weights:
        raise ConfigError(
            "MODEL.DISTILL.TEACHER_WEIGHTS is empty and TEACHER_CONFIG "
            f"({name!r}) is not a model-zoo config with known weights: set TEACHER_WEIGHTS to the "
            "teacher's checkpoint (a path or a detectron2:// URL)."
        )
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: file not found. Point it at the "
                "teacher checkpoint (.pkl from the detectron2 model zoo or a .pth written by "
                "detectron2), or use a detectron2:// URL."
            )
        if not os.access(weights, os.R_OK):
            raise ConfigError(f"MODEL.DISTILL.TEACHER_WEIGHTS={weights!r}: file is not readable.")
    return weights


def teacher_identity(cfg: CfgNode) -> dict:
    """The metadata that ties a class-means file to the teacher of ``cfg``."""
    try:
        weights = resolve_teacher_weights(cfg)
    except ConfigError:
        weights = cfg.MODEL.DISTILL.TEACHER_WEIGHTS
    return {
        "teacher_config": cfg.MODEL.DISTILL.TEACHER_CONFIG,
        "teacher_weights": weights,
        "teacher_opts": [str(x) for x in cfg.MODEL.DISTILL.TEACHER_OPTS],
    }
