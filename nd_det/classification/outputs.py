"""What every classifier of this package returns."""
from dataclasses import dataclass
from typing import List

import torch

__all__ = ["ClassifierOutput"]


@dataclass
class ClassifierOutput:
    """One forward pass of a classifier.

    Attributes:
        logits: (N, num_classes) class scores.
        embedding: (N, D) penultimate feature: the globally pooled last feature map, the input of
            the final linear layer.  The ND loss and the class means work on it.
        features: the stage features ReviewKD fuses, ordered shallow -> deep; the last entry is the
            embedding viewed as (N, D, 1, 1).  ``model.feature_channels`` lists their channels.
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    features: List[torch.Tensor]
