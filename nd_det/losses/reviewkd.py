"""ReviewKD (Chen et al., 2021): attention-based fusion (ABF) of student features + HCL loss.

The fusion runs from the deepest level to the shallowest: each level's student feature is
reduced by a 1x1 conv, fused with the (upsampled) output of the level below it through a
2-channel attention map, and mapped to the teacher's channel count by a 3x3 conv.  HCL compares
each fused level with the teacher's feature at several pooled resolutions.
"""

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .group_batch_norm import GroupSyncBatchNorm2d
from .precision import at_least_float32

__all__ = ["ABF", "ReviewKDFusion", "hcl_loss"]

_HCL_POOL_SIZES = (4, 2, 1)


def _norm(kind: str, channels: int, bn_group=None) -> nn.Module:
    if kind == "bn":
        # ABFs only ever run in training (they feed a loss), so running statistics would never
        # be used; not tracking them also keeps data-parallel ranks bit-identical
        if bn_group is not None:
            return GroupSyncBatchNorm2d(channels, bn_group)
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if kind == "gn":
        return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"ReviewKD norm must be one of 'bn', 'gn', 'none'; got {kind!r}")


class ABF(nn.Module):
    """One attention-based fusion block.

    forward(x, residual=None, out_size=None) -> (output, new_residual): ``output`` has
    ``out_channels`` channels and goes to the loss; ``new_residual`` (``mid_channels``) feeds the
    next shallower level.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        fuse: bool,
        norm: str = "bn",
        bn_group=None,
    ):
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            _norm(norm, mid_channels, bn_group),
        )
        self.output = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            _norm(norm, out_channels, bn_group),
        )
        self.attention = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
            if fuse
            else None
        )
        for module in (self.reduce[0], self.output[0]):
            nn.init.kaiming_uniform_(module.weight, a=1)

    def forward(
        self,
        x: torch.Tensor,
        residual: Optional[torch.Tensor] = None,
        out_size: Optional[tuple[int, int]] = None,
    ):
        x = self.reduce(x)
        if self.attention is not None:
            if residual is None:
                raise ValueError("ABF with fuse=True needs the residual of the deeper level")
            if residual.shape[-2:] != x.shape[-2:]:
                residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = self.attention(torch.cat([x, residual], dim=1))
            x = x * z[:, 0:1] + residual * z[:, 1:2]
        if out_size is not None and tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.output(x), x


class ReviewKDFusion(nn.Module):
    """A stack of ABFs over feature levels ordered shallow -> deep.

    Args:
        in_channels: student channels per level (shallow -> deep).
        out_channels: teacher channels per level (shallow -> deep).
        mid_channels: width of the fused residual path.
        norm: "bn" (reference), "gn" or "none".
        bn_group: with "bn", a torch.distributed process group whose images the BatchNorm
            statistics cover (:class:`GroupSyncBatchNorm2d`); None: this process's images.

    Works for detection (5 FPN levels of 256 channels) and for classification stages of
    different widths and sizes; pass ``out_sizes`` (teacher spatial sizes) when they differ from
    the student's.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int],
        mid_channels: int,
        norm: str = "bn",
        bn_group=None,
    ):
        super().__init__()
        if len(in_channels) != len(out_channels) or not in_channels:
            raise ValueError(
                "ReviewKDFusion needs one student and one teacher channel count per level; got "
                f"in_channels={list(in_channels)}, out_channels={list(out_channels)}"
            )
        n = len(in_channels)
        self.abfs = nn.ModuleList(
            ABF(c_in, mid_channels, c_out, fuse=(i < n - 1), norm=norm, bn_group=bn_group)
            for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))
        )

    def forward(
        self, feats: Sequence[torch.Tensor], out_sizes: Optional[Sequence[tuple[int, int]]] = None
    ) -> list[torch.Tensor]:
        if len(feats) != len(self.abfs):
            raise ValueError(f"ReviewKDFusion expects {len(self.abfs)} levels, got {len(feats)}")
        outs: list[torch.Tensor] = [None] * len(feats)  # type: ignore[list-item]
        residual = None
        for i in reversed(range(len(feats))):
            size = None if out_sizes is None else out_sizes[i]
            outs[i], residual = self.abfs[i](feats[i], residual, size)
        return outs


def _hcl_level(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """HCL of one level from the difference d = fs - ft, computed once in the working precision:
    average pooling is linear, so MSE(pool(fs), pool(ft)) = mean(pool(d)^2); the pools run on
    one tensor instead of two, and only d is kept for the backward pass.  ``ft`` of a lower
    precision is promoted inside the subtraction, without a float32 copy of it."""
    if fs.numel() == 0:
        # an empty batch: 0 (a mean over no elements would be NaN), still attached to the graph
        return at_least_float32(fs).sum() * 0.0
    diff = at_least_float32(fs) - ft  # type promotion: float32, or float64 if either is
    loss = diff.square().mean()
    weight, total = 1.0, 1.0
    h = diff.shape[2]
    for size in _HCL_POOL_SIZES:
        if size >= h:
            continue
        weight /= 2.0
        loss = loss + weight * F.adaptive_avg_pool2d(diff, size).square().mean()
        total += weight
    return loss / total


def hcl_loss(
    student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Hierarchical context loss summed over levels, in float32 (float64 inputs
    stay float64).

    Per level: MSE(fs, ft) plus, for each pooled size l in (4, 2, 1) smaller than the feature
    height, w_l * MSE(avgpool_l(fs), avgpool_l(ft)) with w = 0.5, 0.25, 0.125; divided by the sum
    of the weights used (1 + ...).  An empty batch (N == 0) gives 0, still attached to the
    graph.
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(
            f"hcl_loss: need the same non-zero number of levels; got {len(student_feats)} student "
            f"and {len(teacher_feats)} teacher levels"
        )
    for level, (fs, ft) in enumerate(zip(student_feats, teacher_feats)):
        if fs.shape != ft.shape:
            raise ValueError(
                f"hcl_loss: level {level} shapes differ: student {tuple(fs.shape)} vs teacher "
                f"{tuple(ft.shape)}"
            )
    return sum(_hcl_level(fs, ft) for fs, ft in zip(student_feats, teacher_feats))
