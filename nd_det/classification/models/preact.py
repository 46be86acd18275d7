"""Stages that report their output before the final ReLU as well as after it.

ReviewKD's reference code compares the teacher's stage outputs before the last ReLU of each
stage ("preact" features); these helpers give both maps from one pass, without running any layer
twice, so the logits are exactly those of the plain forward.
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ReluOutputBlock", "run_stage"]


class ReluOutputBlock(nn.Module):
    """A block whose output is ``relu(preact(x))``; subclasses implement ``preact``."""

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: nothing else holds the pre-activation map here
        return F.relu(self.preact(x), inplace=True)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.preact(x)
        return F.relu(pre), pre


def run_stage(stage: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``stage`` and returns ``(output, pre-activation output)``.  A module with
    ``forward_with_preact`` gives both itself; an ``nn.Sequential`` runs its blocks and asks its
    last block the same way; for any other module the output also stands for its pre-activation
    map (right for a stage that ends without an activation)."""
    if hasattr(stage, "forward_with_preact"):
        return stage.forward_with_preact(x)
    if isinstance(stage, nn.Sequential) and len(stage) > 0:
        for block in stage[:-1]:
            x = block(x)
        return run_stage(stage[-1], x)
    out = stage(x)
    return out, out
