"""The random-number generators of a training process, as a checkpointable object.

detectron2 does not save RNG states, so a resumed run draws other RPN/RoI samples and
augmentations than the uninterrupted run would have.  Saving them with each checkpoint (and the
data sampler's position, see ResumableTrainingSampler) makes a resumed single-process CPU run
continue exactly where the checkpoint was taken.
"""
import random

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """state_dict()/load_state_dict() of Python's, NumPy's and torch's (CPU + CUDA) generators."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            # plain types only, so the checkpoint loads with torch.load(weights_only=True)
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                      float(gauss)],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
