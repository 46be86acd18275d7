"""Projection of student embeddings to the teacher's size, used only for the ND input."""

from torch import nn

__all__ = ["EmbeddingProjection"]


class EmbeddingProjection(nn.Sequential):
    """BatchNorm1d(s_dim) -> Dropout(p) -> Linear(s_dim, t_dim)."""

    def __init__(self, student_dim: int, teacher_dim: int, dropout: float = 0.5):
        super().__init__(
            nn.BatchNorm1d(student_dim),
            nn.Dropout(dropout),
            nn.Linear(student_dim, teacher_dim),
        )
