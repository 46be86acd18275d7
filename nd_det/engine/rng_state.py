"""The trainer's RNG states (:class:`nd_det.utils.rng_state.RNGState`), gathered through
detectron2's ``comm`` (its gloo group for objects, whatever the training backend).

detectron2 does not save RNG states, so a resumed run would draw other RPN/RoI samples and
augmentations than the uninterrupted run; with them (and the data sampler's position, see
ResumableTrainingSampler) it continues exactly where the checkpoint was taken."""

from detectron2.utils import comm

from ..utils import rng_state

__all__ = ["RNGState"]


class RNGState(rng_state.RNGState):
    def __init__(self):
        super().__init__(comm.all_gather, comm.get_rank)
