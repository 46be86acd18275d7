"""Files crafted as an attacker would craft them: unpickling one (``pickle.load``,
``torch.load(weights_only=False)``, detectron2's ``.pkl`` reader) creates a marker file, so a
test can see whether any code a file carries ran."""

import pickle

import numpy as np
import torch

__all__ = ["Touch", "marker_pickle", "marker_torch"]


class Touch:
    """Unpickled, ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def marker_pickle(path, marker, protocol: int = pickle.DEFAULT_PROTOCOL):
    """A detectron2 model-zoo style ``.pkl`` (numpy arrays under "model") whose ``__author__``
    runs :class:`Touch` when unpickled."""
    data = {"model": {"conv.weight": np.zeros((2, 2), np.float32)}, "__author__": Touch(marker)}
    with open(path, "wb") as stream:
        pickle.dump(data, stream, protocol=protocol)
    return str(path)


def marker_torch(path, marker, payload=None):
    """``torch.save`` of ``payload`` (default a checkpoint-like dict) with a :class:`Touch`
    entry added."""
    payload = dict(payload or {"model": {"conv.weight": torch.zeros(2, 2)}})
    payload["extra"] = Touch(marker)
    torch.save(payload, str(path))
    return str(path)
