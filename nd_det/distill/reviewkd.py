"""ReviewKD (Chen et al.): ABF fusion of the student's feature levels, deepest first, and HCL
against the teacher's levels (FPN levels of a detector; stage maps of a classifier)."""

import torch

from ..errors import ConfigError
from ..losses import ReviewKDFusion, hcl_loss
from .inputs import DistillInputs
from .term import DistillTerm, TermContext, register_distill_term

__all__ = ["ReviewKDTerm"]

NORMS = ("bn", "gn", "none")


@register_distill_term
class ReviewKDTerm(DistillTerm):
    """``in_features``: the levels compared, shallow to deep (empty: every level).
    ``student_preact`` / ``teacher_preact`` take that side's maps before the stages' last ReLU
    (the reference's CIFAR code compares the teacher's).  With ``norm`` "bn", ``bn_images`` is
    the number of images each ABF BatchNorm covers (``context.bn_group``: the processes that
    share them; 0: each process's own images)."""

    name = "reviewkd"
    trains_modules = True

    def __init__(
        self,
        context: TermContext,
        weight: float = 1.0,
        warm_up: bool = False,
        in_features=(),
        mid_channels: int = 256,
        norm: str = "bn",
        bn_images: int = 0,
        student_preact: bool = False,
        teacher_preact: bool = False,
    ):
        super().__init__(context, weight, warm_up)
        # empty: every level of either side (then both must have the same ones)
        self.in_features = list(in_features) or list(
            dict.fromkeys([*context.teacher_levels, *context.student_levels])
        )
        for who, levels in (
            ("student", context.student_levels),
            ("teacher", context.teacher_levels),
        ):
            missing = [f for f in self.in_features if f not in levels]
            if missing:
                raise ConfigError(
                    f"{context.key(self.name, 'in_features')}={self.in_features}: the {who} "
                    f"backbone has no level(s) {missing} (it has {list(levels)})."
                )
        if norm not in NORMS:
            raise ConfigError(
                f"{context.key(self.name, 'norm')}={norm!r}: use 'bn' (the reference), 'gn' "
                "or 'none'"
            )
        if int(mid_channels) < 1:
            raise ConfigError(
                f"{context.key(self.name, 'mid_channels')} {mid_channels}: give 1 or more"
            )
        self.student_preact, self.teacher_preact = bool(student_preact), bool(teacher_preact)
        use_group = norm == "bn" and context.bn_group is not None
        self.fusion = ReviewKDFusion(
            [context.student_levels[f] for f in self.in_features],
            [context.teacher_levels[f] for f in self.in_features],
            mid_channels=int(mid_channels),
            norm=norm,
            bn_group=context.bn_group(int(bn_images)) if use_group else None,
        )

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        s = inputs.student_preact_features if self.student_preact else inputs.student_features
        t = inputs.teacher_preact_features if self.teacher_preact else inputs.teacher_features
        teacher = [t[f] for f in self.in_features]
        fused = self.fusion(
            [s[f] for f in self.in_features], out_sizes=[tuple(x.shape[-2:]) for x in teacher]
        )
        return self.weight * hcl_loss(fused, teacher)
