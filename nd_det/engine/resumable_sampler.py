"""The training sampler of DistillTrainer: detectron2's TrainingSampler stream, resumable."""

import itertools

import torch
from detectron2.utils import comm
from torch.utils.data import Sampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(Sampler):
    """The same infinite, shuffled, rank-sharded index stream as detectron2's
    ``TrainingSampler`` (``randperm(size)`` after ``randperm(size)`` from a generator seeded with
    ``seed``; rank r takes every world_size-th index from position r), plus:

    * a public ``seed`` and ``state_dict()`` / ``load_state_dict()`` holding it, so a resumed
      run replays the same stream even when the seed was drawn at random;
    * ``skip``: the number of this rank's indices to drop from the start of the stream, set on
      resume to (iterations done x images per rank), so the resumed run sees the images the
      uninterrupted run would have seen next.

    Written here rather than subclassed because detectron2's sampler offers neither: its seed
    and stream are private.
    """

    def __init__(self, size: int, seed=None):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"ResumableTrainingSampler needs a positive int size; got {size!r}")
        self.size = size
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.rank = comm.get_rank()
        self.world_size = comm.get_world_size()
        self.skip = 0

    def _stream(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            yield from torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self):
        mine = itertools.islice(self._stream(), self.rank, None, self.world_size)
        yield from itertools.islice(mine, self.skip, None)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("size", self.size) != self.size:
            raise ValueError(
                f"the checkpoint's data sampler covered {state['size']} images but the training "
                f"set now has {self.size}: resume with the dataset the run started with"
            )
        self.seed = int(state["seed"])
