"""Teacher class means for ND: the mean penultimate embedding of each class over a dataset
(the training set, without augmentation), with the teacher in eval mode.

Works in one process or distributed (each rank takes a disjoint shard, sums are all-reduced), and
writes the class-means file format shared with detection (``nd_det.losses.class_means``).
"""

from typing import Optional

import torch

from ..losses import ClassMeanAccumulator, ClassMeans

__all__ = ["extract_class_means"]


@torch.no_grad()
def extract_class_means(
    model: torch.nn.Module,
    loader,
    num_classes: int,
    device: torch.device,
    metadata: Optional[dict] = None,
    amp_dtype=None,
    class_names=None,
) -> ClassMeans:
    was_training = model.training
    model.eval()
    accumulator = ClassMeanAccumulator(num_classes, model.embedding_dim, device=device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            embedding = model(images).embedding
        accumulator.update(embedding.float(), labels)
    accumulator.all_reduce()
    model.train(was_training)
    metadata = dict(metadata or {})
    metadata.setdefault("num_samples", int(accumulator.counts.sum()))
    metadata.setdefault("embedding", "penultimate (global average pool) of the teacher, eval mode")
    return accumulator.finalize(metadata, class_names=class_names)
