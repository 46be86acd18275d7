"""ReviewKD: fuse the student's stage features (ABF, deepest first) and match the teacher's with
the hierarchical context loss.  The student's and teacher's ``feature_channels`` must have the
same number of levels; spatial sizes may differ (the fusion resizes to the teacher's).

Which maps each side gives follows the reference code: by default the student's stage outputs
(``ClassifierOutput.features``, what its models return with ``is_feat=True``) are fused, and the
teacher's outputs before the stages' final ReLU (``preact_features``, its ``preact=True``) are the
targets (CIFAR/ReviewKD++/train_reviewkd.py).  ``student_preact`` / ``teacher_preact`` pick the
other list per side, for the ImageNet pairs whose reference models return other maps.
"""

from ...errors import ConfigError
from ...losses import ReviewKDFusion, hcl_loss
from .base import LossTerm
from .registry import register_loss_term

__all__ = ["ReviewKDTerm"]


@register_loss_term
class ReviewKDTerm(LossTerm):
    name = "reviewkd"
    warm_up_by_default = True
    positive_params = ("weight", "mid_channels")
    param_choices = {"norm": ("bn", "gn", "none")}

    def __init__(
        self,
        context,
        weight: float = 1.0,
        warm_up=None,
        mid_channels: int = 256,
        norm: str = "bn",
        student_preact: bool = False,
        teacher_preact: bool = True,
    ):
        super().__init__(weight, warm_up)
        s_channels = context.student.feature_channels
        t_channels = context.teacher.feature_channels
        if len(s_channels) != len(t_channels):
            raise ConfigError(
                f"reviewkd: the student gives {len(s_channels)} feature levels {s_channels} but "
                f"the teacher gives {len(t_channels)} {t_channels}; ReviewKD needs one student "
                "level per teacher level (pick a pair of the same family depth, e.g. a CIFAR "
                "ResNet/WRN/ShuffleNet pair with 4 levels, or ResNet-50 + MobileNet with 5)"
            )
        # (types and ranges of the parameters are checked by the registry with the config)
        self.student_preact = bool(student_preact)
        self.teacher_preact = bool(teacher_preact)
        self.fusion = ReviewKDFusion(s_channels, t_channels, int(mid_channels), norm=norm)

    def compute(self, student, teacher, labels):
        s_feats = student.preact_features if self.student_preact else student.features
        t_feats = teacher.preact_features if self.teacher_preact else teacher.features
        sizes = [tuple(f.shape[-2:]) for f in t_feats]
        fused = self.fusion(s_feats, out_sizes=sizes)
        return hcl_loss(fused, t_feats)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, student_preact={self.student_preact}, "
            f"teacher_preact={self.teacher_preact}"
        )
