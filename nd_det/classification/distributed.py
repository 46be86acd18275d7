"""Process-group set-up for ``torchrun`` (single node or multi-node) and small collectives.

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the
run is a single process.  The backend is NCCL on CUDA and gloo on CPU.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

__all__ = [
    "DistContext",
    "init_distributed",
    "all_reduce_sum",
    "average_buffers",
    "cleanup_distributed",
    "stop_if_any_rank_fails",
]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(requested_device: str = "auto") -> DistContext:
    """This process's rank and device (``train.device``: auto, cpu or cuda), its process group
    joined when torchrun started several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested_device == "auto":
        requested_device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested_device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # raises without a CUDA device
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, device)


@contextmanager
def stop_if_any_rank_fails(ctx: DistContext) -> Iterator[None]:
    """The one collective of a run's set-up, around it: every rank says whether its set-up
    raised a UserError.  A rank with an error raises it; the others raise one naming the first
    failed rank and its message, so that no rank waits in a later collective for a rank that
    stopped.  Without a process group this only re-raises the error."""
    error = None
    try:
        yield
    except UserError as e:
        error = e
    if ctx.distributed and dist.is_available() and dist.is_initialized():
        messages = [None] * ctx.world_size
        dist.all_gather_object(messages, None if error is None else " ".join(str(error).split()))
        failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
        if error is None and failed:
            rank, message = failed[0]
            raise UserError(f"process {rank} of {ctx.world_size} stopped during set-up: {message}")
    if error is not None:
        raise error


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


@torch.no_grad()
def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over all processes, so every
    rank evaluates and saves the same model."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    world = dist.get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world)
