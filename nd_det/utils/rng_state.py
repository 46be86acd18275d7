"""The random-number generators of the training processes, as a checkpointable object (torch,
numpy and stdlib only: detection and classification trainers both save it).

Saving them with each checkpoint makes a resumed run draw the random numbers the uninterrupted
run would have drawn.  Each process has its own generators, so the checkpoint holds every rank's
states (gathered when it is taken: every rank must call ``state_dict``) and each rank restores
its own.
"""

import logging
import random
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

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


def _gather(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class RNGState:
    """state_dict()/load_state_dict() of Python's, NumPy's and torch's (CPU + CUDA) generators
    of every rank (a collective: called on every rank at the same moment).  ``all_gather`` and
    ``get_rank`` default to torch.distributed's (a single process without a process group)."""

    def __init__(
        self, all_gather: Optional[Callable] = None, get_rank: Optional[Callable[[], int]] = None
    ):
        self.all_gather = all_gather or _gather
        self.get_rank = get_rank or _rank

    def state_dict(self) -> dict:
        return {"ranks": self.all_gather(_own_state())}

    def load_state_dict(self, state: dict) -> None:
        ranks, rank = state["ranks"], self.get_rank()
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
