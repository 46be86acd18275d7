"""What the benchmark times: each a zero-argument callable doing one unit of work.

Precision: ``bf16`` runs the forward under ``torch.autocast(device, bfloat16)`` like detectron2's
AMP trainer (no loss scaling: bfloat16 has float32's range); the teacher follows
``MODEL.DISTILL.TEACHER_AUTOCAST``; the loss core computes in float32.
"""
import contextlib
import dataclasses
from typing import Callable, Dict, List, Optional

import torch
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from torch import nn

from nd_det.modeling.distill_terms import DistillInputs

__all__ = [
    "precision_context",
    "TrainStep",
    "teacher_inference",
    "TeacherDistillForward",
    "reviewkd_alone",
    "raw_images",
    "sample_rois",
    "distill_inputs",
]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def precision_context(device: torch.device, precision: str):
    """autocast for ``bf16``, nothing for ``fp32``."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """One training step of ``model`` on ``batch`` (forward under the run's precision,
    ``zero_grad``, backward, optimizer step), as detectron2's trainers run it; the last losses
    (detached) are kept."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: List[Dict],
                 precision: str):
        self.model, self.optimizer, self.batch = model, optimizer, batch
        self.precision = precision
        self.last_losses: Dict[str, torch.Tensor] = {}

    def __call__(self) -> None:
        with precision_context(self.model.device, self.precision):
            losses = self.model(self.batch)
            total = sum(losses.values())
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self.last_losses = {k: v.detach() for k, v in losses.items()}


def raw_images(model: nn.Module, batch: List[Dict]) -> List[torch.Tensor]:
    """The batch's images on the model's device (DistillRCNN copies each image once and shares
    the copy between student and teacher)."""
    return [x["image"].to(model.device) for x in batch]


@torch.no_grad()
def sample_rois(model: nn.Module, batch: List[Dict], precision: str) -> List[Instances]:
    """The RoIs the student samples on ``batch`` (its backbone, RPN and
    ``label_and_sample_proposals``), as one DistillRCNN step would sample them."""
    with EventStorage(0), precision_context(model.device, precision):
        images = model.preprocess_image(batch)
        gt = [x["instances"].to(model.device) for x in batch]
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, gt)
        return model.roi_heads.label_and_sample_proposals(proposals, gt)


def teacher_inference(distiller: nn.Module, inputs: List[Dict]) -> Callable[[], None]:
    """The full teacher (preprocessing, backbone, RPN, box head, NMS) in eval mode."""
    teacher = distiller.teacher

    @torch.no_grad()
    def run() -> None:
        with teacher.precision():
            teacher.model(inputs)

    return run


class TeacherDistillForward:
    """What a DistillRCNN step runs on the teacher: preprocessing from the shared device copy
    of the images, backbone, and the box head (+ box predictor when a term needs logits) on the
    student's sampled RoIs (``FrozenTeacher.outputs`` with the distiller's ``teacher_needs``)."""

    def __init__(self, distiller: nn.Module, raw: List[torch.Tensor], sampled: List[Instances]):
        self.distiller, self.raw, self.sampled = distiller, raw, sampled
        self.last_outputs = None

    def __call__(self) -> None:
        teacher = self.distiller.teacher
        images = teacher.preprocess(self.raw)
        self.last_outputs = teacher.outputs(images, [p.proposal_boxes for p in self.sampled],
                                            self.distiller.teacher_needs)


@torch.no_grad()
def distill_inputs(distiller: nn.Module, batch: List[Dict], precision: str,
                   sampled: Optional[List[Instances]] = None) -> DistillInputs:
    """One step's DistillInputs (student tensors detached), computed as DistillRCNN does."""
    with EventStorage(0), precision_context(distiller.device, precision):
        sampled = sampled if sampled is not None else sample_rois(distiller, batch, precision)
        images, teacher_images = distiller.preprocess_pair(batch)
        features = distiller.backbone(images.tensor)
        embeddings, logits, _ = distiller.student_box_branch(features, sampled)
        return distiller.distill_inputs(features, embeddings, logits, teacher_images, sampled)


def with_student_grad(inputs: DistillInputs) -> DistillInputs:
    """A copy of ``inputs`` whose student tensors are fresh leaves that require grad, so a
    term's backward computes the gradient it would send into the student."""
    def leaf(x):
        return None if x is None else x.detach().clone().requires_grad_(True)

    return dataclasses.replace(
        inputs,
        student_embeddings=leaf(inputs.student_embeddings),
        student_logits=leaf(inputs.student_logits),
        student_features={k: leaf(v) for k, v in inputs.student_features.items()},
    )


def reviewkd_alone(term: nn.Module, inputs: DistillInputs, precision: str) -> Callable[[], None]:
    """The ReviewKD term alone: ABF fusion of the student's FPN levels + HCL against the
    teacher's, forward and backward (gradients into the ABF weights and into the student
    features, as in the full step), under the run's precision."""
    inputs = with_student_grad(inputs)
    device = next(iter(inputs.teacher_features.values())).device

    def run() -> None:
        term.zero_grad(set_to_none=True)
        for f in inputs.student_features.values():
            f.grad = None
        with precision_context(device, precision):
            loss = term(inputs)
        loss.backward()

    return run
