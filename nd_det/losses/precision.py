"""The working precision of the loss core.

Losses run in float32 whatever the input (float16/bfloat16 activations from autocast are upcast,
so no loss is computed in half precision), but float64 inputs stay float64: double-precision
callers (``torch.autograd.gradcheck``, golden-value tests) get double-precision results.
"""

import torch

__all__ = ["at_least_float32"]


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float64 if it is float64, otherwise as float32."""
    return x if x.dtype == torch.float64 else x.float()
