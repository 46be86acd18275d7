"""ReviewKD: fuse the student's stage features (ABF, deepest first) and match the teacher's with
the hierarchical context loss.  The student's and teacher's ``feature_channels`` must have the
same number of levels; spatial sizes may differ (the fusion resizes to the teacher's)."""
from ...losses import ReviewKDFusion, hcl_loss
from .base import LossTerm
from .registry import register_loss_term

__all__ = ["ReviewKDTerm"]


@register_loss_term
class ReviewKDTerm(LossTerm):
    name = "reviewkd"
    warm_up_by_default = True

    def __init__(self, context, weight: float = 1.0, warm_up=None, mid_channels: int = 256,
                 norm: str = "bn"):
        super().__init__(weight, warm_up)
        s_channels = context.student.feature_channels
        t_channels = context.teacher.feature_channels
        if len(s_channels) != len(t_channels):
            raise ValueError(
                f"reviewkd: the student gives {len(s_channels)} feature levels {s_channels} but "
                f"the teacher gives {len(t_channels)} {t_channels}; ReviewKD needs one student "
                "level per teacher level (pick a pair of the same family depth, e.g. a CIFAR "
                "ResNet/WRN/ShuffleNet pair with 4 levels, or ResNet-50 + MobileNet with 5)"
            )
        self.fusion = ReviewKDFusion(s_channels, t_channels, int(mid_channels), norm=norm)

    def compute(self, student, teacher, labels):
        sizes = [tuple(f.shape[-2:]) for f in teacher.features]
        fused = self.fusion(student.features, out_sizes=sizes)
        return hcl_loss(fused, teacher.features)
