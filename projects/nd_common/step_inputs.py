"""What one DistillRCNN training step computes before its distillation terms, through the
model's own public steps (the benchmark times its parts, the ablation measures the embedding
geometry on it).  Kept here, once, until nd_det's DistillRCNN offers it as a method."""

import contextlib

import torch
from detectron2.utils.events import EventStorage

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def precision_context(device: torch.device, precision: str):
    """``torch.autocast`` to the dtype of ``precision`` ("bf16"), or nothing ("fp32")."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def student_step_inputs(model, batch: list[dict], precision: str):
    """The teacher's ImageList, the sampled RoIs and the terms' inputs of one step of ``model``
    (a DistillRCNN in training mode) on ``batch`` (student tensors detached)."""
    with EventStorage(0), precision_context(model.device, precision):
        images, teacher_images = model.preprocess_pair(batch)
        gt = [x["instances"].to(model.device) for x in batch]
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, gt)
        sampled = model.roi_heads.label_and_sample_proposals(proposals, gt)
        embeddings, logits, _ = model.student_box_branch(features, sampled)
        inputs = model.distill_inputs(features, embeddings, logits, teacher_images, sampled)
    return teacher_images, sampled, inputs
