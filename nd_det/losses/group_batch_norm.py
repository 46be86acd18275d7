"""BatchNorm whose batch statistics cover the images of a group of processes.

The reference trained ReviewKD on 4 GPUs x 2 images: each ABF BatchNorm normalised over 2
images.  With 8 GPUs x 1 image, plain BatchNorm would normalise over one image.  This layer
sums the statistics over a process group (e.g. pairs of ranks), so the normalisation covers the
images of the whole group, with gradients flowing through the reduction.

Written here because torch's ``SyncBatchNorm`` runs on GPUs only (its statistics kernels reject
CPU tensors, so gloo runs cannot use it) and detectron2's ``NaiveSyncBatchNorm`` always
synchronises the whole world, not a group; this module imports torch only (the loss core).
"""

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GroupSyncBatchNorm2d"]


class _AllReduceSum(torch.autograd.Function):
    """The sum over the processes of ``group``, with its gradient (the sum of the processes'
    gradients): ``torch.distributed.nn.functional.all_reduce``, which torch deprecates (a
    FutureWarning at every call site of every process) for an API without CPU autograd."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllReduceSum.apply(grad.contiguous(), ctx.group), None


class GroupSyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d(track_running_stats=False)`` normalising with the mean and (biased)
    variance over every image of the processes in ``group``; exactly BatchNorm on the
    concatenated batch.  Without a group (or outside torch.distributed) it is plain BatchNorm.
    Statistics are computed in float32 (as autocast does for batch norm)."""

    def __init__(self, num_features: int, group=None):
        super().__init__(num_features, track_running_stats=False)
        self.group = group

    def _synchronised(self) -> bool:
        return (
            self.group is not None
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.group) > 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._synchronised():
            return super().forward(x)
        x = x.float()
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        totals = _AllReduceSum.apply(torch.cat([x.sum(dim=(0, 2, 3)), count]), self.group)
        n = totals[-1]
        mean = totals[:-1] / n
        centered = x - mean[None, :, None, None]
        var = _AllReduceSum.apply(centered.square().sum(dim=(0, 2, 3)), self.group) / n
        scale = torch.rsqrt(var + self.eps) * self.weight
        return centered * scale[None, :, None, None] + self.bias[None, :, None, None]
