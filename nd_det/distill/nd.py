"""ND: the student's embeddings against the teacher's class means (norm and direction)."""

import torch
from torch import nn

from ..errors import ConfigError
from ..losses import EmbeddingProjection, nd_loss
from ..losses.nd import nd_mechanism
from .inputs import DistillInputs
from .term import DistillTerm, TermContext, register_distill_term

__all__ = ["NDTerm"]


@register_distill_term
class NDTerm(DistillTerm):
    """``nd_loss`` of the student's embeddings (through a projector to the teacher's width when
    the widths differ) against ``context.class_means``.  ``include_background`` false averages
    over the foreground rows only (labels below ``context.num_classes``).  Mixed targets (N, C)
    mix the class means with the same weights, as the reference's DeiT code does."""

    name = "nd"
    needs_teacher_embeddings = True

    def __init__(
        self,
        context: TermContext,
        weight: float = 1.0,
        warm_up: bool = False,
        include_background: bool = True,
        projector: bool = True,
        dropout: float = 0.5,
    ):
        super().__init__(context, weight, warm_up)
        s_dim, t_dim = context.student_embedding_dim, context.teacher_embedding_dim
        if s_dim != t_dim and not projector:
            raise ConfigError(
                f"ND needs student and teacher RoI embeddings of one size: student box head "
                f"gives {s_dim} ({context.embedding_key}), teacher {t_dim}. Set the student's "
                f"{context.embedding_key} to the teacher's, or {context.key('nd', 'projector')} "
                "True (a student-side projector to the teacher's width, for ND only)."
            )
        self.include_background = bool(include_background)
        self.num_classes = context.num_classes
        # trained with the student and saved with it, left out of exports
        self.projection = (
            EmbeddingProjection(s_dim, t_dim, dropout) if s_dim != t_dim else nn.Identity()
        )
        # rebuilt from the file at every start, never checkpointed
        self.register_buffer("class_means", context.class_means, persistent=False)

    def _targets(self, labels: torch.Tensor):
        """(class means, labels) for ``nd_loss``: mixed targets get one mixed mean per row."""
        if labels.dim() == 2:
            return labels.to(self.class_means.dtype) @ self.class_means, torch.arange(
                len(labels), device=labels.device
            )
        return self.class_means, labels

    def forward(self, inputs: DistillInputs) -> torch.Tensor:
        means, labels = self._targets(inputs.labels)
        args = (self.projection(inputs.student_embeddings), inputs.teacher_embeddings, labels)
        if self.include_background:
            return nd_loss(*args, means, weight=self.weight)
        rows = nd_loss(*args, means, reduction="none")
        fg = (labels < self.num_classes).to(rows.dtype)
        # a masked mean, without any host-device sync on the number of foreground rows
        return self.weight * (rows * fg).sum() / fg.sum().clamp_min(1.0)

    @torch.no_grad()
    def mechanism(self, inputs: DistillInputs) -> dict[str, torch.Tensor]:
        """What ND acts on in this step (:func:`~nd_det.losses.nd_mechanism`), over the
        foreground rows: the student's mean embedding norm over the teacher's and the mean
        cosine to the class mean of each row's label.  The projector, if any, runs in eval mode
        (no BatchNorm statistics change, no dropout)."""
        training = self.projection.training
        student = self.projection.eval()(inputs.student_embeddings)
        self.projection.train(training)
        means, labels = self._targets(inputs.labels)
        foreground = labels < self.num_classes if inputs.labels.dim() == 1 else None
        return nd_mechanism(student, inputs.teacher_embeddings, labels, means, foreground)
