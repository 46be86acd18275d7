"""The seeds the tools accept: what numpy's legacy seeding takes (0 .. 2**32 - 1), since
detectron2's ``seed_all_rng``, the demo and the data loaders seed numpy with them; anything
else would fail deep inside a run, after its output folder was made."""

import argparse
import random

import numpy as np
import torch

__all__ = ["MAX_SEED", "seed_argument", "seed_everything"]

MAX_SEED = 2**32 - 1


def seed_argument(text: str) -> int:
    """argparse ``type=`` for a ``--seed`` flag."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r}: give a seed between 0 and {MAX_SEED}")
    return value


def seed_everything(seed: int) -> None:
    """Seed torch, Python's ``random`` and numpy (``seed`` modulo 2**32) in one call.  Written
    here because detectron2's ``seed_all_rng`` cannot serve the classification package, which
    never imports detectron2."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
