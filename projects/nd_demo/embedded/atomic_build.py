"""Build a cache folder once, atomically: in a temporary sibling folder, then renamed into place.

A reader never sees a half-built folder under the final name: the builder writes into
``.<name>.building-XXXX`` next to it and renames that folder over the final name when done (an
out-of-date folder is first renamed aside, then deleted).  Processes that build the same folder at
the same time (e.g. the ranks of a multi-process run) take turns through a lock file
``.<name>.lock`` beside it (fvcore's ``file_lock``, as detectron2 locks its cached COCO
conversions; a waiter gives up after an hour).  Leftovers of a killed build are deleted by the
next build.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from fvcore.common.file_io import file_lock

__all__ = ["build_atomically"]


def _remove_leftovers(parent: Path, name: str) -> None:
    for prefix in (f".{name}.building-", f".{name}.old-"):
        for leftover in parent.glob(prefix + "*"):
            shutil.rmtree(leftover, ignore_errors=True)


def build_atomically(root: Path, is_current: Callable[[Path], bool],
                     build: Callable[[Path], None]) -> bool:
    """Make ``root`` hold an up-to-date build.

    Args:
        root: the final folder.
        is_current: tells whether a folder holds a complete, up-to-date build.
        build: writes a complete build into the (empty, existing) folder it is given.

    Returns:
        True when this call built the folder, False when it was already current.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(str(root.parent / f".{root.name}")):  # locks .<name>.lock
        if root.is_dir() and is_current(root):
            return False
        _remove_leftovers(root.parent, root.name)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
        try:
            build(staging)
            if root.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.rename(root, old / root.name)
                os.rename(staging, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(staging, root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return True
