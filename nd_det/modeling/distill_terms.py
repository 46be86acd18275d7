"""The distillation terms of DistillRCNN, chosen by name from ``MODEL.DISTILL.LOSSES``.

Each term is a small module in fvcore's registry :data:`DISTILL_TERM_REGISTRY`, with a ``name``
(the entry of ``MODEL.DISTILL.LOSSES``); ``forward(inputs)`` returns one scalar that goes into
the loss dict as ``loss_<name>``.  A term declares which teacher outputs it needs, so the
teacher's RoI head only runs when some term uses it.  No per-method if/elif anywhere.  A new
term: subclass :class:`DistillTerm`, set ``name``, decorate with
``@register_distill_term``.
"""

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from detectron2.config import CfgNode
from torch import nn

from ..class_means import load_class_means, metadata_mismatches
from ..errors import ConfigError, DataError
from ..losses import EmbeddingProjection, dkd_loss, hcl_loss, kd_loss, nd_loss
from ..losses.reviewkd import ReviewKDFusion
from ..utils.registry import Registry, register_as, registered_names
from .bn_groups import abf_bn_group
from .shapes import ModelShapes, shapes_of
from .teacher import FrozenTeacher

__all__ = [
    "DistillInputs",
    "DistillTerm",
    "DISTILL_TERM_REGISTRY",
    "register_distill_term",
    "available_distill_terms",
    "check_distill_loss_names",
    "check_distill_terms",
    "terms_with_modules",
    "build_distill_terms",
]

logger = logging.getLogger(__name__)


@dataclass
class DistillInputs:
    """What one training step hands to the distillation terms (student side keeps its graph)."""

    labels: torch.Tensor  # (R,) int64 RoI labels of the sampled proposals; background = K
    student_embeddings: torch.Tensor  # (R, D) student box-head output
    student_logits: torch.Tensor  # (R, K + 1) student RoI class logits
    student_features: dict[str, torch.Tensor]  # student FPN levels
    teacher_features: dict[str, torch.Tensor]  # teacher FPN levels (no graph)
    teacher_embeddings: Optional[torch.Tensor] = None  # (R, D) teacher box head, same boxes
    teacher_logits: Optional[torch.Tensor] = None  # (R, K + 1)


class DistillTerm(nn.Module):
    """Base class: a named loss term built from the config, the student and the teacher.

    ``check(cfg, student, teacher)`` (ModelShapes of both) raises ConfigError when the
    term cannot work with these models: the pre-flight calls it on meta-device shapes before
    anything is built, :func:`build_distill_terms` on the real models (one call each)."""

    name: str = ""
    needs_teacher_embeddings: bool = False
    needs_teacher_logits: bool = False
    # True when the term owns trainable modules (saved as distill_terms.* in checkpoints)
    trains_modules: bool = False

    @classmethod
    def check(cls, cfg: CfgNode, student: ModelShapes, teacher: ModelShapes) -> None:
        """The term's keys: a listed term must weigh something (0 would silently train without
        it, a negative weight would push the student away from the teacher); a temperature,
        where the term has one, must be positive."""
        node = cfg.MODEL.DISTILL[cls.name.upper()]
        key = f"MODEL.DISTILL.{cls.name.upper()}"
        if not node.WEIGHT > 0:
            raise ConfigError(
                f"{key}.WEIGHT {node.WEIGHT}: '{cls.name}' is in MODEL.DISTILL.LOSSES, so give it "
                f"a positive weight, or remove it from LOSSES"
            )
        if "TEMPERATURE" in node and not node.TEMPERATURE > 0:
            raise ConfigError(
                f"{key}.TEMPERATURE {node.TEMPERATURE}: give a positive "
                "softmax temperature (1.0 in the reference's detection runs)"
            )

    def forward(self, inputs: DistillInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


DISTILL_TERM_REGISTRY = Registry("DISTILL_TERM")
DISTILL_TERM_REGISTRY.__doc__ = "DistillTerm subclasses under their `name` (MODEL.DISTILL.LOSSES)."


def register_distill_term(cls):
    """Class decorator: ``cls`` under ``cls.name`` in :data:`DISTILL_TERM_REGISTRY`."""
    register_as(DISTILL_TERM_REGISTRY, cls.name, cls, "distillation term")
    return cls


def available_distill_terms() -> list[str]:
    """The names ``MODEL.DISTILL.LOSSES`` may hold."""
    return registered_names(DISTILL_TERM_REGISTRY)


@register_distill_term
class NDTerm(DistillTerm):
    """ND on the RoI embeddings against the teacher's class means (background row included);
    the student's embeddings pass through a projector to the teacher's width when they differ
    (MODEL.DISTILL.ND.PROJECTOR)."""

    name = "nd"
    needs_teacher_embeddings = True

    @classmethod
    def check(cls, cfg: CfgNode, student: ModelShapes, teacher: ModelShapes) -> None:
        super().check(cfg, student, teacher)
        for who, shapes in (("student", student), ("teacher", teacher)):
            if shapes.embedding_dim is None:
                raise ConfigError(
                    f"ND needs a {who} box head that outputs flat RoI embeddings: set its "
                    "MODEL.ROI_BOX_HEAD.NAME FastRCNNConvFCHead with NUM_FC >= 1"
                )
        if student.embedding_dim != teacher.embedding_dim and not cfg.MODEL.DISTILL.ND.PROJECTOR:
            raise ConfigError(
                f"ND needs student and teacher RoI embeddings of one size: student box head "
                f"gives {student.embedding_dim} (MODEL.ROI_BOX_HEAD.FC_DIM), teacher "
                f"{teacher.embedding_dim}. Set the student's MODEL.ROI_BOX_HEAD.FC_DIM to the "
                "teacher's, or MODEL.DISTILL.ND.PROJECTOR True (a student-side projector to the "
                "teacher's width, for ND only)."
            )

    @staticmethod
    def class_means_table(cfg: CfgNode, dim: int):
        """MODEL.DISTILL.CLASS_MEANS, read and checked (NUM_CLASSES + 1 rows of ``dim``
        values); a bad file is one DataError naming the key."""
        try:
            return load_class_means(
                cfg.MODEL.DISTILL.CLASS_MEANS,
                num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1,
                dim=dim,
            )
        except DataError as e:
            raise DataError(f"MODEL.DISTILL.CLASS_MEANS: {e}") from None

    def __init__(self, cfg: CfgNode, student: nn.Module, teacher: FrozenTeacher):
        super().__init__()
        self.weight = float(cfg.MODEL.DISTILL.ND.WEIGHT)
        self.include_background = bool(cfg.MODEL.DISTILL.ND.INCLUDE_BACKGROUND)
        self.num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        student_shapes = shapes_of(student.backbone, student.roi_heads)
        s_dim, t_dim = student_shapes.embedding_dim, teacher.embedding_dim
        # widths that differ passed the check only with ND.PROJECTOR on (trained with the
        # student, saved as distill_terms.*, left out of the export)
        self.projection = EmbeddingProjection(s_dim, t_dim) if s_dim != t_dim else nn.Identity()
        path = cfg.MODEL.DISTILL.CLASS_MEANS
        table = self.class_means_table(cfg, teacher.embedding_dim)
        for line in metadata_mismatches(table, teacher.identity):
            logger.warning(
                "MODEL.DISTILL.CLASS_MEANS=%s may come from another teacher (%s). Class means "
                "differ strongly between teachers: re-extract them for this one.",
                path,
                line,
            )
        # rebuilt from the file at every start, never checkpointed
        self.register_buffer("class_means", table.means, persistent=False)

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        args = (
            self.projection(inputs.student_embeddings),
            inputs.teacher_embeddings,
            inputs.labels,
            self.class_means,
        )
        if self.include_background:
            return nd_loss(*args, weight=self.weight)
        rows = nd_loss(*args, reduction="none")
        fg = (inputs.labels < self.num_classes).to(rows.dtype)
        # a masked mean, without any host-device sync on the number of foreground RoIs
        return self.weight * (rows * fg).sum() / fg.sum().clamp_min(1.0)


@register_distill_term
class KDTerm(DistillTerm):
    """KD on the (K + 1)-way RoI logits."""

    name = "kd"
    needs_teacher_logits = True

    def __init__(self, cfg: CfgNode, student: nn.Module, teacher: FrozenTeacher):
        super().__init__()
        self.weight = float(cfg.MODEL.DISTILL.KD.WEIGHT)
        self.temperature = float(cfg.MODEL.DISTILL.KD.TEMPERATURE)

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        return self.weight * kd_loss(inputs.student_logits, inputs.teacher_logits, self.temperature)


@register_distill_term
class DKDTerm(DistillTerm):
    """DKD on the RoI logits with the RoI labels as targets."""

    name = "dkd"
    needs_teacher_logits = True

    def __init__(self, cfg: CfgNode, student: nn.Module, teacher: FrozenTeacher):
        super().__init__()
        c = cfg.MODEL.DISTILL.DKD
        self.weight, self.alpha, self.beta = float(c.WEIGHT), float(c.ALPHA), float(c.BETA)
        self.temperature = float(c.TEMPERATURE)

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        return self.weight * dkd_loss(
            inputs.student_logits,
            inputs.teacher_logits,
            inputs.labels,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
        )


@register_distill_term
class ReviewKDTerm(DistillTerm):
    """ABF fusion of the student's FPN levels + HCL against the teacher's levels."""

    name = "reviewkd"
    trains_modules = True

    @classmethod
    def check(cls, cfg: CfgNode, student: ModelShapes, teacher: ModelShapes) -> None:
        super().check(cfg, student, teacher)
        c = cfg.MODEL.DISTILL.REVIEWKD
        in_features = list(c.IN_FEATURES)
        if not in_features:
            raise ConfigError(
                "MODEL.DISTILL.REVIEWKD.IN_FEATURES is empty: name the FPN "
                "levels to compare, e.g. ['p2', 'p3', 'p4', 'p5', 'p6']"
            )
        for who, shapes in (("student", student), ("teacher", teacher)):
            missing = [f for f in in_features if f not in shapes.levels]
            if missing:
                raise ConfigError(
                    f"MODEL.DISTILL.REVIEWKD.IN_FEATURES={in_features}: the {who} backbone has "
                    f"no level(s) {missing} (it has {sorted(shapes.levels)})."
                )
        if c.NORM not in ("bn", "gn", "none"):
            raise ConfigError(
                f"MODEL.DISTILL.REVIEWKD.NORM={c.NORM!r}: use 'bn' (the reference), 'gn' or 'none'"
            )
        if int(c.MID_CHANNELS) < 1:
            raise ConfigError(
                f"MODEL.DISTILL.REVIEWKD.MID_CHANNELS={c.MID_CHANNELS}: "
                "give a positive width (256 as the reference)"
            )

    def __init__(self, cfg: CfgNode, student: nn.Module, teacher: FrozenTeacher):
        super().__init__()
        c = cfg.MODEL.DISTILL.REVIEWKD
        self.weight = float(c.WEIGHT)
        self.in_features = list(c.IN_FEATURES)
        s_shapes, t_shapes = shapes_of(student.backbone, student.roi_heads), teacher.shapes
        bn_group = (
            abf_bn_group(int(c.BN_IMAGES), int(cfg.SOLVER.IMS_PER_BATCH))
            if c.NORM == "bn"
            else None
        )
        self.fusion = ReviewKDFusion(
            [s_shapes.levels[f].channels for f in self.in_features],
            [t_shapes.levels[f].channels for f in self.in_features],
            mid_channels=int(c.MID_CHANNELS),
            norm=c.NORM,
            bn_group=bn_group,
        )

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        teacher = [inputs.teacher_features[f] for f in self.in_features]
        fused = self.fusion(
            [inputs.student_features[f] for f in self.in_features],
            out_sizes=[tuple(t.shape[-2:]) for t in teacher],
        )
        return self.weight * hcl_loss(fused, teacher)


def check_distill_loss_names(names) -> list[str]:
    """``MODEL.DISTILL.LOSSES`` as a list, checked: known names, none twice."""
    names = list(names)
    unknown = [n for n in names if n not in DISTILL_TERM_REGISTRY]
    if unknown:
        raise ConfigError(
            f"MODEL.DISTILL.LOSSES has unknown name(s) {unknown}; choose from "
            f"{available_distill_terms()}."
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"MODEL.DISTILL.LOSSES lists a loss twice: {names}")
    return names


def terms_with_modules(names) -> list[str]:
    """The names among ``names`` whose terms own trainable modules."""
    return [
        n
        for n in names
        if n in DISTILL_TERM_REGISTRY and DISTILL_TERM_REGISTRY.get(n).trains_modules
    ]


def check_distill_terms(cfg: CfgNode, student: ModelShapes, teacher: ModelShapes) -> None:
    """Every configured term's check, on the shapes of the two models (no model needed)."""
    for name in check_distill_loss_names(cfg.MODEL.DISTILL.LOSSES):
        DISTILL_TERM_REGISTRY.get(name).check(cfg, student, teacher)


def build_distill_terms(cfg: CfgNode, student: nn.Module, teacher: FrozenTeacher) -> nn.ModuleList:
    """One term per name of ``MODEL.DISTILL.LOSSES``, in order, after the terms' checks (the
    same :func:`check_distill_terms` the pre-flight runs on shapes of meta-device models; here
    on the real models, for a caller that built without the pre-flight)."""
    names = check_distill_loss_names(cfg.MODEL.DISTILL.LOSSES)
    check_distill_terms(cfg, shapes_of(student.backbone, student.roi_heads), teacher.shapes)
    return nn.ModuleList(DISTILL_TERM_REGISTRY.get(n)(cfg, student, teacher) for n in names)
