"""ND loss: the vectorised nd-det form against the per-RoI Python loop of the 2023 reference.

The reference code keeps the class means as Python lists (read from a JSON file) and, for every
RoI, builds that RoI's class centre as a new tensor, copies it to the device, normalises it and
computes the RoI's term; the terms are then stacked and averaged.  :func:`nd_loss_per_roi_loop`
does exactly that (written afresh here, as the slow but obviously-correct reference), and
:func:`compare_nd_implementations` checks that it and :func:`nd_det.losses.nd_loss` give the same
value and the same gradient.
"""
from typing import Dict, List, Sequence

import torch

from nd_det.losses import nd_loss

__all__ = ["nd_loss_per_roi_loop", "nd_benchmark_inputs", "compare_nd_implementations",
           "NDForwardBackward"]


def nd_loss_per_roi_loop(student: torch.Tensor, teacher: torch.Tensor,
                         labels: Sequence[int], class_means: List[List[float]]) -> torch.Tensor:
    """Reference-style ND: one RoI at a time, each class centre made from a Python list and
    copied to the device."""
    device = student.device
    terms = []
    for i, label in enumerate(labels):
        centre = torch.tensor(class_means[label], dtype=torch.float32, device=device)
        direction = centre / centre.norm()
        s, t = student[i], teacher[i]
        terms.append(1.0 - (s * direction).sum() / torch.max(s.norm(), t.norm()))
    return torch.stack(terms).mean()


def nd_benchmark_inputs(rois: int, dim: int, num_classes: int, device: torch.device,
                        seed: int = 0) -> Dict[str, object]:
    """Student/teacher RoI embeddings (post-ReLU-like, positive), labels and a class-means
    table, on ``device``; plus the Python-list forms the reference loop reads."""
    g = torch.Generator().manual_seed(seed)
    student = torch.rand(rois, dim, generator=g)
    teacher = torch.rand(rois, dim, generator=g) * 1.5
    labels = torch.randint(0, num_classes, (rois,), generator=g)
    means = torch.rand(num_classes, dim, generator=g)
    return {
        "student": student.to(device),
        "teacher": teacher.to(device),
        "labels": labels.to(device),
        "class_means": means.to(device),
        "labels_list": labels.tolist(),
        "class_means_list": means.tolist(),
    }


class NDForwardBackward:
    """One forward + backward of an ND implementation (``"vectorised"`` or ``"per_roi_loop"``)
    on fixed inputs; the student embeddings are a leaf whose gradient is reset every call."""

    def __init__(self, inputs: Dict[str, object], implementation: str):
        if implementation not in ("vectorised", "per_roi_loop"):
            raise ValueError(f"unknown ND implementation {implementation!r}")
        self.inputs = inputs
        self.implementation = implementation
        self.student = inputs["student"].detach().clone().requires_grad_(True)
        self.last_value = None

    def __call__(self) -> None:
        self.student.grad = None
        x = self.inputs
        if self.implementation == "vectorised":
            loss = nd_loss(self.student, x["teacher"], x["labels"], x["class_means"])
        else:
            # reference style: the labels come to the host once per step (.tolist()), the
            # centres live in a Python list
            loss = nd_loss_per_roi_loop(self.student, x["teacher"], x["labels"].tolist(),
                                        x["class_means_list"])
        loss.backward()
        self.last_value = loss.detach()


def compare_nd_implementations(inputs: Dict[str, object], tolerance: float = 1e-5) -> Dict:
    """Loss value and student gradient of both implementations on ``inputs``."""
    runs = {name: NDForwardBackward(inputs, name) for name in ("vectorised", "per_roi_loop")}
    for run in runs.values():
        run()
    vec, loop = runs["vectorised"], runs["per_roi_loop"]
    value_diff = float((vec.last_value - loop.last_value).abs())
    grad_diff = float((vec.student.grad - loop.student.grad).abs().max())
    return {
        "vectorised_value": float(vec.last_value),
        "per_roi_loop_value": float(loop.last_value),
        "value_abs_diff": value_diff,
        "grad_max_abs_diff": grad_diff,
        "tolerance": tolerance,
        "equal": value_diff <= tolerance and grad_diff <= tolerance,
    }
