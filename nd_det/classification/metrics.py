"""Top-k accuracy counts and evaluation over a (possibly sharded) loader."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum

__all__ = ["topk_correct", "evaluate"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Number of rows whose label is among the k highest logits, for each k (ties broken by
    ``torch.topk``)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(labels[:, None])
    return torch.stack([hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader, device: torch.device, amp_dtype=None
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``,
    summed over all processes when distributed (each sample must be seen by exactly one rank)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, loss, count
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).logits
        logits = logits.float()
        sums[:2] += topk_correct(logits, labels, (1, 5))
        sums[2] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[3] += labels.numel()
    all_reduce_sum(sums)
    model.train(was_training)
    count = max(1.0, float(sums[3]))
    return {
        "top1": 100.0 * float(sums[0]) / count,
        "top5": 100.0 * float(sums[1]) / count,
        "loss": float(sums[2]) / count,
        "samples": int(sums[3]),
    }
