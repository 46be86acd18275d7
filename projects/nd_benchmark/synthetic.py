"""Synthetic inputs and random-weight models that stay numerically sane.

A randomly initialised detectron2 ResNet keeps its FrozenBatchNorm2d layers at the identity
(mean 0, variance 1): activations then grow by orders of magnitude through the stages (~1e7 at
the end of an R50) and a training step soon gives NaN.  :func:`calibrate_frozen_batchnorm`
sets every FrozenBatchNorm2d's running statistics from one batch instead, layer by layer in
forward order, so that each normalises its own input; random R50/R101 models then give
activations of order one, like a trained network.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.structures import Boxes, Instances
from torch import nn

__all__ = [
    "MIN_IMAGE_SIDE",
    "synthetic_batch",
    "without_annotations",
    "calibrate_frozen_batchnorm",
    "random_class_means_table",
]


MIN_IMAGE_SIDE = 32  # the smallest side the synthetic images (and their boxes) are made with


def synthetic_batch(batch_size: int, height: int, width: int, num_classes: int,
                    boxes_per_image: int = 5, seed: int = 0) -> List[Dict]:
    """detectron2 training inputs: ``batch_size`` random uint8 (3, H, W) images, each with
    ``boxes_per_image`` ground-truth boxes of random classes covering 1/10 to 1/2 of each side."""
    if batch_size < 1 or min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"synthetic_batch: need batch_size >= 1 and images of at least {MIN_IMAGE_SIDE}x"
            f"{MIN_IMAGE_SIDE} pixels; got "
            f"batch_size={batch_size}, height={height}, width={width}"
        )
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float32)
    batch = []
    for _ in range(batch_size):
        image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
        wh = size * (0.1 + 0.4 * torch.rand(boxes_per_image, 2, generator=g))
        xy = (size - wh) * torch.rand(boxes_per_image, 2, generator=g)
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        instances.gt_classes = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        batch.append({"image": image, "instances": instances, "height": height, "width": width})
    return batch


def without_annotations(batch: Sequence[Dict]) -> List[Dict]:
    """The inference form of a batch (no ``instances``)."""
    return [{k: v for k, v in x.items() if k != "instances"} for x in batch]


@torch.no_grad()
def calibrate_frozen_batchnorm(module: nn.Module, run_forward) -> int:
    """Set the statistics of every FrozenBatchNorm2d in ``module`` from the inputs it sees
    while ``run_forward()`` runs (one forward pass of a batch): each layer's running mean and
    variance become the per-channel mean and variance of its input, its affine weight 1 and bias
    0, so its output is normalised.  Layers are set in forward order, each before it runs, so a
    layer sees inputs that the layers before it already normalise.  Returns how many layers
    were set."""
    calibrated: List[FrozenBatchNorm2d] = []

    def set_from_input(layer: FrozenBatchNorm2d, args):
        x = args[0].detach().float()
        layer.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        # running_var + eps must equal the input variance for a unit-variance output
        var = x.var(dim=(0, 2, 3), unbiased=False)
        layer.running_var.copy_((var - layer.eps).clamp_min(0.0))
        layer.weight.fill_(1.0)
        layer.bias.fill_(0.0)
        calibrated.append(layer)

    handles = [layer.register_forward_pre_hook(set_from_input) for layer in module.modules()
               if isinstance(layer, FrozenBatchNorm2d)]
    try:
        run_forward()
    finally:
        for h in handles:
            h.remove()
    return len(calibrated)


def random_class_means_table(num_rows: int, dim: int, seed: int = 0) -> Tuple[torch.Tensor,
                                                                                torch.Tensor]:
    """A made-up (num_rows, dim) table of positive class means (like post-ReLU box-head
    features) and per-class counts, the shape a real class-means file has."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num_rows, dim, generator=g), torch.full((num_rows,), 100, dtype=torch.int64)
