"""ND (norm and direction) on the penultimate embeddings, against the teacher's class means.

When the student's embedding size differs from the teacher's, a projection (BatchNorm1d ->
Dropout -> Linear) maps the student embedding to the teacher's size for this term only; the
student's classifier keeps its own embedding.  Mixed targets (data.mixup/cutmix_alpha) mix
the class means with the same weights, as the reference's DeiT code does."""

import torch
from torch import nn

from ...errors import ConfigError, DataError
from ...losses import EmbeddingProjection, nd_loss
from .base import LossTerm
from .registry import register_loss_term

__all__ = ["NDTerm"]


@register_loss_term
class NDTerm(LossTerm):
    name = "nd"
    fraction_params = ("dropout",)

    def __init__(self, context, weight: float = 1.0, warm_up=None, dropout: float = 0.5):
        super().__init__(weight, warm_up)
        means = context.class_means
        s_dim = context.student.embedding_dim
        t_dim = context.teacher.embedding_dim
        if means is None:
            raise ConfigError(
                "loss term 'nd' needs the teacher's class means: set "
                "distill.class_means to a file made by tools/extract_class_means.py "
                "--task classification"
            )
        if means.dim != t_dim or means.num_classes != context.student.num_classes:
            raise DataError(
                f"class means are ({means.num_classes}, {means.dim}) but the teacher embedding "
                f"has {t_dim} dimensions and the student {context.student.num_classes} classes; "
                "re-extract them for this teacher and dataset"
            )
        self.projection = (
            EmbeddingProjection(s_dim, t_dim, dropout) if s_dim != t_dim else nn.Identity()
        )
        # rebuilt from the file at every start, never checkpointed
        self.register_buffer("class_means", means.means, persistent=False)

    def compute(self, student, teacher, labels):
        means = self.class_means
        if labels.dim() == 2:  # (N, C) mixed targets: each row's mix of the class means
            means = labels.to(means.dtype) @ means
            labels = torch.arange(len(means), device=means.device)
        return nd_loss(self.projection(student.embedding), teacher.embedding, labels, means)
