"""A detectron2 TrainingSampler that can continue its stream after a resume."""
import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite shuffled TrainingSampler, plus:

    * ``state_dict()`` / ``load_state_dict()`` holding its seed, so a resumed run replays the
      same shuffled stream even when the seed was drawn at random;
    * ``skip``: the number of this rank's indices to drop from the start of the stream, set on
      resume to (iterations done x images per rank), so the resumed run sees the images the
      uninterrupted run would have seen next.
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.skip = 0

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.skip, None)

    def state_dict(self) -> dict:
        return {"seed": self._seed, "size": self._size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("size", self._size) != self._size:
            raise ValueError(
                f"the checkpoint's data sampler covered {state['size']} images but the training "
                f"set now has {self._size}: resume with the dataset the run started with"
            )
        self._seed = int(state["seed"])
