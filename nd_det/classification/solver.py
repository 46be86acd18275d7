"""Optimizer and learning-rate schedule (set once per epoch, so resuming needs no scheduler state)."""
import math
from typing import Dict, Iterable

import torch

from ..errors import ConfigError


__all__ = ["build_optimizer", "learning_rate_at", "set_learning_rate"]


def build_optimizer(params: Iterable[torch.nn.Parameter], solver: Dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [p for p in params if p.requires_grad],
        lr=float(solver["lr"]),
        momentum=float(solver["momentum"]),
        nesterov=bool(solver["nesterov"]),
        weight_decay=float(solver["weight_decay"]),
    )


def learning_rate_at(epoch: int, solver: Dict) -> float:
    """LR of the 0-based ``epoch``: ``multistep`` multiplies by lr_gamma at each milestone
    reached; ``cosine`` anneals from lr to 0 over the epochs."""
    base = float(solver["lr"])
    schedule = solver["lr_schedule"]
    if schedule == "multistep":
        passed = sum(1 for m in solver["lr_milestones"] if epoch >= int(m))
        return base * float(solver["lr_gamma"]) ** passed
    if schedule == "cosine":
        return 0.5 * base * (1.0 + math.cos(math.pi * epoch / max(1, int(solver["epochs"]))))
    raise ConfigError(f"solver.lr_schedule must be multistep or cosine; got {schedule!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
