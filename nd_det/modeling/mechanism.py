"""ND's mechanism of one training step into detectron2's EventStorage, for every distillation
student (two-stage and one-stage): ``nd/norm_ratio``, the student's mean embedding norm over the
teacher's on the same foreground rows, and with the ND term ``nd/cosine_to_class_mean``
(:meth:`NDTerm.mechanism <nd_det.distill.nd.NDTerm.mechanism>`); the writers put them into
metrics.json, the console and TensorBoard."""

from typing import Callable, Optional

import torch
from detectron2.utils.events import get_event_storage

from ..distill import DistillInputs
from ..losses import nd_mechanism

__all__ = ["put_mechanism"]


@torch.no_grad()
def put_mechanism(
    terms,
    inputs: DistillInputs,
    teacher_embeddings: Callable[[], torch.Tensor],
    foreground: Optional[torch.Tensor] = None,
) -> None:
    """With an ND term among ``terms``: its own mechanism; else the norm ratio alone over the
    ``foreground`` rows (every row when None), the teacher's embeddings from the step or, when
    no term needed them, from ``teacher_embeddings()``."""
    nd = next((term for term in terms if term.name == "nd"), None)
    if nd is not None:
        values = nd.mechanism(inputs)
    else:
        teacher = inputs.teacher_embeddings
        teacher = teacher_embeddings() if teacher is None else teacher
        values = nd_mechanism(inputs.student_embeddings, teacher, inputs.labels, None, foreground)
    storage = get_event_storage()
    storage.put_scalars(smoothing_hint=False, **{f"nd/{k}": float(v) for k, v in values.items()})
