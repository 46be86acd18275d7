"""The one table of autocast precisions by config name (torch only: the classification package
uses it too)."""

import torch

from ..errors import ConfigError

__all__ = ["AUTOCAST_DTYPES", "autocast_dtype"]

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(name: str, key: str) -> torch.dtype:
    """The dtype of ``name``; a ConfigError naming ``key`` (the config key) otherwise."""
    if name not in AUTOCAST_DTYPES:
        raise ConfigError(f"{key}={name!r}: use one of {sorted(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[name]
