"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), split 80/20.

Pixel values 0..16 are rescaled to 0..255 uint8, so the in-memory pipeline treats them like any
other image.  The split is stratified and fixed (seeded), identical on every machine.
"""

import numpy as np
import torch

from ...errors import MissingDependencyError
from .in_memory import InMemoryImages

__all__ = ["load_digits_split"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _split_indices(labels: np.ndarray, train: bool) -> np.ndarray:
    rng = np.random.RandomState(SPLIT_SEED)
    chosen = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * TEST_FRACTION))
        chosen.append(idx[n_test:] if train else idx[:n_test])
    return np.sort(np.concatenate(chosen))


def load_digits_split(train: bool, transform=None) -> InMemoryImages:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError(
            "data.name digits needs scikit-learn: pip install scikit-learn"
        ) from None

    bunch = load_digits()
    keep = _split_indices(bunch.target, train)
    pixels = np.round(bunch.images[keep] * (255.0 / 16.0)).astype(np.uint8)
    return InMemoryImages(
        torch.from_numpy(pixels).unsqueeze(1),
        torch.from_numpy(bunch.target[keep].astype(np.int64)),
        transform,
        [str(d) for d in range(10)],
    )
