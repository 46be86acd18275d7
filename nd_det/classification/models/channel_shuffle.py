"""Channel shuffle (ShuffleNet): interleave the channels of ``groups`` groups."""
import torch

__all__ = ["channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
