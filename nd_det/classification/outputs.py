"""What every classifier of this package returns."""

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["ClassifierOutput"]


@dataclass
class ClassifierOutput:
    """One forward pass of a classifier.

    Attributes:
        logits: (N, num_classes) class scores.
        embedding: (N, D) penultimate feature: the globally pooled last feature map, the input of
            the final linear layer.  The ND loss and the class means work on it.
        features: the stage features, ordered shallow -> deep, as the stages output them (after
            the final ReLU where a stage ends with one); the last entry is the embedding viewed
            as (N, D, 1, 1).  ``model.feature_channels`` lists their channels.  ReviewKD fuses
            these on the student side.
        preact_features: the same levels before that final ReLU (the maps the ReviewKD reference
            compares on the teacher side); a stage without a final activation gives the same map
            in both lists, and the last entry is the same embedding.
        distill_logits: the distillation head's class scores of a model that has one (DeiT's
            distillation token), the side the logit-distillation terms compare with the
            teacher; None for the others.  Such a model's ``logits`` are its class-token head's
            in training and the mean of both heads in eval mode (DeiT's evaluation).
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    features: list[torch.Tensor]
    preact_features: list[torch.Tensor]
    distill_logits: Optional[torch.Tensor] = None
