"""All-or-nothing file writes: a temporary file in the same folder, flushed, fsynced, renamed.

A process killed at any moment leaves either the old file or the complete new one under the
final name, never a truncated file (the rename is atomic on POSIX file systems).
"""

import json
import os
import tempfile
from typing import BinaryIO, Callable, Optional

import torch

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_text",
    "atomic_write_json",
    "current_umask",
]


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str, write: Callable[[BinaryIO], None], verify: Optional[Callable[[str], None]] = None
) -> None:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then move it to ``path``.

    ``verify(temporary_path)``, when given, runs on the complete temporary file before the move;
    an exception from it leaves ``path`` untouched.  The file gets the permissions a plain
    ``open()`` would give it (mkstemp makes it private to its owner)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)``, all or nothing."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, all or nothing."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(obj, path: str, **dump_options) -> None:
    """``json.dump(obj)`` to ``path`` (indent 1 unless given, a final newline), all or nothing."""
    dump_options.setdefault("indent", 1)
    atomic_write_text(json.dumps(obj, **dump_options) + "\n", path)
