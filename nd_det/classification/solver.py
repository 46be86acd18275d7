"""Optimizer and learning-rate schedule (a function of the epoch, set once per epoch or, for
``warmup_cosine``, at every iteration from the fractional epoch: resuming needs no scheduler
state)."""

import math
from collections.abc import Iterable

import torch

from ..errors import ConfigError

__all__ = ["build_optimizer", "learning_rate_at", "set_learning_rate"]


def build_optimizer(params: Iterable[torch.nn.Parameter], solver: dict) -> torch.optim.Optimizer:
    """SGD, or AdamW without weight decay on biases and norm layers (the 1-D parameters), as the
    MAE / DeiT recipe of the reference's ImageNet/DeiT code."""
    params = [p for p in params if p.requires_grad]
    if solver["optimizer"] not in ("sgd", "adamw"):
        raise ConfigError(f"solver.optimizer {solver['optimizer']!r}: use sgd or adamw")
    if solver["optimizer"] == "adamw":
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            groups,
            lr=float(solver["lr"]),
            betas=tuple(solver["betas"]),
            weight_decay=float(solver["weight_decay"]),
        )
    return torch.optim.SGD(
        params,
        lr=float(solver["lr"]),
        momentum=float(solver["momentum"]),
        nesterov=bool(solver["nesterov"]),
        weight_decay=float(solver["weight_decay"]),
    )


def learning_rate_at(epoch: float, solver: dict) -> float:
    """LR of the 0-based ``epoch``: ``multistep`` multiplies by lr_gamma at each milestone
    reached; ``cosine`` anneals from lr to 0 over the epochs; ``warmup_cosine`` (``epoch`` may
    be fractional) rises linearly from 0 over warmup_epochs, then anneals to min_lr."""
    base = float(solver["lr"])
    schedule = solver["lr_schedule"]
    if schedule == "warmup_cosine":
        warm, low = float(solver["warmup_epochs"]), float(solver["min_lr"])
        if epoch < warm:
            return base * epoch / warm
        progress = (epoch - warm) / max(int(solver["epochs"]) - warm, 1e-8)
        return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "multistep":
        passed = sum(1 for m in solver["lr_milestones"] if epoch >= int(m))
        return base * float(solver["lr_gamma"]) ** passed
    if schedule == "cosine":
        return 0.5 * base * (1.0 + math.cos(math.pi * epoch / max(1, int(solver["epochs"]))))
    raise ConfigError(f"solver.lr_schedule {schedule!r}: use multistep, cosine or warmup_cosine")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
