"""Which of the teacher's box heads gives the RoI embeddings and class logits the distillation
terms use (and the class means are averaged from).

A Faster / Mask R-CNN has one box head.  A Cascade R-CNN has one per stage (``box_head`` and
``box_predictor`` are ``nn.ModuleList``s); ``MODEL.DISTILL.TEACHER_CASCADE_STAGE`` picks one,
counted from 0, and -1 (the default) is the last.  The last stage by default because its head is
the one trained on the best-localised boxes (IoU 0.7 in detectron2's cascades) and gives the
cascade's final boxes: its embeddings are the most class-discriminative of the three.  The chosen
head runs on the student's sampled boxes as they are (no refinement by the earlier stages), so
that teacher and student describe the same regions.
"""

from detectron2.modeling.roi_heads import StandardROIHeads
from torch import nn

from ...errors import ConfigError

__all__ = ["LAST_STAGE", "num_box_stages", "box_stage"]

LAST_STAGE = -1
_KEY = "MODEL.DISTILL.TEACHER_CASCADE_STAGE"


def num_box_stages(roi_heads: StandardROIHeads) -> int:
    return len(roi_heads.box_head) if isinstance(roi_heads.box_head, nn.ModuleList) else 1


def box_stage(roi_heads: StandardROIHeads, stage: int) -> tuple[nn.Module, nn.Module, int]:
    """(box head, box predictor, stage index) of ``stage``; an index the teacher does not have is
    one ConfigError."""
    count = num_box_stages(roi_heads)
    if not -1 <= stage < count:
        raise ConfigError(
            f"{_KEY} {stage}: the teacher has {count} box stage(s); give -1 .. {count - 1}"
        )
    heads, predictors = roi_heads.box_head, roi_heads.box_predictor
    if count == 1:
        return heads, predictors, 0
    index = count - 1 if stage == LAST_STAGE else stage
    return heads[index], predictors[index], index
