"""What one training step hands to the distillation terms."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch

__all__ = ["DistillInputs"]

Features = Union[Mapping[str, torch.Tensor], Sequence[torch.Tensor]]


@dataclass
class DistillInputs:
    """The student's outputs keep their graph; the teacher's have none.

    Detection: one row per sampled RoI (labels: the RoI classes, background = NUM_CLASSES),
    features by FPN level name; a one-stage detector (RetinaNet, FCOS): labels and embeddings
    one row per positive anchor (its classification tower's output at the anchor's location),
    logits one row per anchor its classification loss counts.  Classification: one row per
    image (labels: class indices, or (N, C) mixed targets of mixup / cutmix), features by stage
    index, shallow to deep."""

    labels: torch.Tensor  # (N,) int64, or (N, C) mixed targets
    student_embeddings: torch.Tensor  # (N, D) the student's embeddings (box head / penultimate)
    student_logits: torch.Tensor  # (N, K) the student's logits the logit terms distil
    student_features: Features  # the student's feature maps
    teacher_features: Features  # the teacher's feature maps
    teacher_embeddings: Optional[torch.Tensor] = None  # (N, D') the teacher's, same rows
    teacher_logits: Optional[torch.Tensor] = None  # (N, K)
    # the same maps taken before each stage's last ReLU (classification models give them)
    student_preact_features: Optional[Features] = None
    teacher_preact_features: Optional[Features] = None
