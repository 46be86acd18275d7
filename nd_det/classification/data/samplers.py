"""Samplers for distributed training and evaluation."""

from torch.utils.data import Sampler

__all__ = ["ShardSampler"]


class ShardSampler(Sampler):
    """Rank r gets indices r, r + world, r + 2 * world, ... in order: every sample exactly once
    over all ranks, no padding and no duplicates (unlike ``DistributedSampler``), so summed
    counts give exact accuracies and class means."""

    def __init__(self, size: int, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.size, self.rank, self.world_size = size, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))
