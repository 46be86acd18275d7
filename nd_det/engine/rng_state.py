"""The random-number generators of the training processes, as a checkpointable object.

detectron2 does not save RNG states, so a resumed run draws other RPN/RoI samples and
augmentations than the uninterrupted run would have.  Saving them with each checkpoint (and the
data sampler's position, see ResumableTrainingSampler) makes a resumed run continue exactly where
the checkpoint was taken.  Each process has its own generators (seeded with SEED + rank), so the
checkpoint holds every rank's states (gathered when it is taken: every rank must call
``state_dict``) and each rank restores its own.
"""

import logging
import random

import numpy as np
import torch
from detectron2.utils import comm

__all__ = ["RNGState"]

logger = logging.getLogger(__name__)


def _own_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        # plain types only, so the checkpoint loads with torch.load(weights_only=True)
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState:
    """state_dict()/load_state_dict() of Python's, NumPy's and torch's (CPU + CUDA) generators
    of every rank (a collective: called on every rank at the same moment)."""

    def state_dict(self) -> dict:
        return {"ranks": comm.all_gather(_own_state())}

    def load_state_dict(self, state: dict) -> None:
        ranks = state.get("ranks", [state])  # a checkpoint of one process before ranks were kept
        rank = comm.get_rank()
        if rank >= len(ranks):
            logger.warning(
                "the checkpoint holds the RNG states of %d process(es); rank %d keeps "
                "its seeded generators (a resumed run with more processes than the "
                "first one draws other random numbers)",
                len(ranks),
                rank,
            )
            return
        _restore(ranks[rank])
