"""What the benchmark times, and how: every variant is a zero-argument callable doing one unit of
work (``bf16``: the forward under ``torch.autocast`` like detectron2's AMP trainer).  Timing is
interleaved: every round runs each variant once, starting one variant further along each round,
so that the drifts of a shared machine hit all variants alike (torch.utils.benchmark and fvcore's
Timer time one statement at a time, hence this loop); wall and CPU time are read.
"""

import contextlib
import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Callable

import torch
from detectron2.utils.events import EventStorage

from nd_det.losses import nd_loss
from nd_det.utils.progress import ProgressClock, format_duration

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def precision_context(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """One training step as detectron2's trainers run it: forward, zero_grad, backward, step."""

    def __init__(self, model, optimizer, batch: list[dict], precision: str):
        self.model, self.optimizer, self.batch, self.precision = model, optimizer, batch, precision
        self.last_losses: dict[str, torch.Tensor] = {}

    def __call__(self) -> None:
        with precision_context(self.model.device, self.precision):
            losses = self.model(self.batch)
            total = sum(losses.values())
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self.last_losses = {k: v.detach() for k, v in losses.items()}


def student_step_inputs(model, batch: list[dict], precision: str):
    """The teacher's ImageList, the sampled RoIs and the terms' inputs of one step
    (``DistillRCNN.distill_step_inputs``) at ``precision``."""
    with EventStorage(0), precision_context(model.device, precision):
        return model.distill_step_inputs(batch)


def teacher_distill_forward(model, batch: list[dict], sampled) -> Callable[[], None]:
    """The teacher's share of a step: preprocessing of the device copy of the images, backbone,
    box head (+ predictor when a term needs logits) on the student's sampled RoIs."""
    raw = [x["image"].to(model.device) for x in batch]
    boxes = [p.proposal_boxes for p in sampled]
    return lambda: model.teacher.outputs(model.teacher.preprocess(raw), boxes, model.teacher_needs)


def teacher_inference(model, batch: list[dict]) -> Callable[[], None]:
    """The whole teacher in eval mode (preprocessing, backbone, RPN, box head, NMS)."""
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch]

    @torch.no_grad()
    def run() -> None:
        with model.teacher.precision():
            model.teacher.model(inputs)

    return run


def term_alone(term, inputs, precision: str) -> Callable[[], None]:
    """One distillation term forward + backward (gradients into its own modules and into the
    student tensors, as in the full step)."""

    def leaf(x):
        return x.detach().clone().requires_grad_(True)

    inputs = dataclasses.replace(
        inputs,
        student_embeddings=leaf(inputs.student_embeddings),
        student_logits=leaf(inputs.student_logits),
        student_features={k: leaf(v) for k, v in inputs.student_features.items()},
    )
    device = inputs.student_embeddings.device

    def run() -> None:
        term.zero_grad(set_to_none=True)
        for x in (
            inputs.student_embeddings,
            inputs.student_logits,
            *inputs.student_features.values(),
        ):
            x.grad = None
        with precision_context(device, precision):
            loss = term(inputs)
        loss.backward()

    return run


def interleaved_samples(
    variants: dict[str, Callable[[], object]],
    iters: int,
    warmup: int,
    synchronize: Callable[[], None] = lambda: None,
    clocks: dict[str, Callable[[], float]] = None,
    what: str = "steps",
) -> dict[str, dict[str, list[float]]]:
    """``{clock: {variant: [seconds, ...]}}``, ``iters`` samples each after ``warmup`` rounds;
    a progress line with the ETA after every round."""
    if iters < 1 or warmup < 0 or not variants:
        raise ValueError(
            f"need iters >= 1, warmup >= 0 and variants; got iters={iters}, "
            f"warmup={warmup}, {len(variants)} variants"
        )
    clocks = CLOCKS if clocks is None else clocks
    names = list(variants)
    samples = {c: {n: [] for n in names} for c in clocks}
    progress = ProgressClock(warmup + iters, skip=0)
    progress.start()
    for round_index in range(warmup + iters):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            synchronize()
            before = {c: clock() for c, clock in clocks.items()}
            variants[name]()
            synchronize()
            for c, clock in clocks.items():
                if round_index >= warmup:
                    samples[c][name].append(clock() - before[c])
        progress.step()
        logger.info(
            "[%s] timing round %d/%d done, ETA %s",
            what,
            progress.done,
            progress.total,
            format_duration(progress.eta_seconds() or 0),
        )
    return samples


def summarize_ms(samples: Sequence[float]) -> dict[str, object]:
    ms = [s * 1000.0 for s in samples]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": [round(x, 3) for x in ms],
    }


# ---------------------------------------------------------------- ND against the reference loop
def nd_loss_per_roi_loop(student, teacher, labels: Sequence[int], class_means: list[list[float]]):
    """The 2023 reference's style, written afresh as the slow, obviously correct reference: one
    RoI at a time, each class centre a new tensor made from a Python list on the device."""
    terms = []
    for i, label in enumerate(labels):
        centre = torch.tensor(class_means[label], dtype=torch.float32, device=student.device)
        s, t = student[i], teacher[i]
        terms.append(1.0 - (s * centre / centre.norm()).sum() / torch.max(s.norm(), t.norm()))
    return torch.stack(terms).mean()


def nd_benchmark_inputs(rois: int, dim: int, num_classes: int, device, seed: int = 0) -> dict:
    """Positive (post-ReLU-like) embeddings, labels and a table, plus the reference's lists."""
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.rand(rois, dim, generator=g), 1.5 * torch.rand(rois, dim, generator=g)
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


def nd_forward_backward(inputs: dict, implementation: str) -> Callable[[], torch.Tensor]:
    """One forward + backward of ``"vectorised"`` (nd_loss) or ``"per_roi_loop"``; the call
    returns the loss and leaves the student gradient in ``call.student.grad``."""
    student = inputs["student"].detach().clone().requires_grad_(True)

    def run() -> torch.Tensor:
        student.grad = None
        if implementation == "vectorised":
            loss = nd_loss(student, inputs["teacher"], inputs["labels"], inputs["class_means"])
        else:  # the reference fetches the labels to the host once per step
            loss = nd_loss_per_roi_loop(
                student, inputs["teacher"], inputs["labels"].tolist(), inputs["class_means_list"]
            )
        loss.backward()
        return loss.detach()

    run.student = student
    return run


def compare_nd_implementations(inputs: dict, tolerance: float = 1e-5) -> dict:
    """Loss value and student gradient of both implementations on the same inputs."""
    vec, loop = (
        nd_forward_backward(inputs, "vectorised"),
        nd_forward_backward(inputs, "per_roi_loop"),
    )
    v, w = vec(), loop()
    value_diff = float((v - w).abs())
    grad_diff = float((vec.student.grad - loop.student.grad).abs().max())
    return {
        "vectorised_value": float(v),
        "per_roi_loop_value": float(w),
        "value_abs_diff": value_diff,
        "grad_max_abs_diff": grad_diff,
        "tolerance": tolerance,
        "equal": value_diff <= tolerance and grad_diff <= tolerance,
    }
