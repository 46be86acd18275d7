"""The shared loss core of nd-det: pure torch, never imports detectron2.

Used by both the detection meta-architecture (``nd_det.modeling``) and the classification
package (``nd_det.classification``).
"""

from .dist import dist_loss
from .dkd import dkd_loss
from .group_batch_norm import GroupSyncBatchNorm2d
from .kd import kd_loss, sigmoid_kd_loss
from .nd import nd_loss, nd_mechanism
from .projection import EmbeddingProjection
from .reviewkd import ABF, ReviewKDFusion, hcl_loss

__all__ = [
    "nd_loss",
    "nd_mechanism",
    "kd_loss",
    "sigmoid_kd_loss",
    "dkd_loss",
    "dist_loss",
    "hcl_loss",
    "ABF",
    "ReviewKDFusion",
    "GroupSyncBatchNorm2d",
    "EmbeddingProjection",
]
