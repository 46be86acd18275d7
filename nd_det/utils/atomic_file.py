"""All-or-nothing file writes: a temporary file in the same folder, flushed, fsynced, renamed.

A process killed at any moment leaves either the old file or the complete new one under the
final name, never a truncated file (the rename is atomic on POSIX file systems).
"""
import os
import tempfile
from typing import BinaryIO, Callable

import torch

__all__ = ["atomic_write", "atomic_torch_save"]


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then move it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)``, all or nothing."""
    atomic_write(path, lambda f: torch.save(obj, f))
