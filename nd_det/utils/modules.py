"""Helpers on torch modules shared by the detection and classification sides."""

from torch import nn

__all__ = ["freeze"]


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good (a teacher); returns ``model``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
