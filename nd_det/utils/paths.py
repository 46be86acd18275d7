"""Checks that a file or folder can be written, made before any work is done, and the one text
for a run's file that could not be written (stdlib only)."""

import os
import tempfile

from ..errors import FileError, os_error_text

__all__ = ["nearest_existing_folder", "check_writable", "write_failed"]


def nearest_existing_folder(path: str) -> str:
    """``path`` itself if it is a folder, else its nearest ancestor that exists."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def write_failed(what: str, path: str, error: OSError, fix: str) -> FileError:
    """``FileError("<what> <path> could not be written: [Errno N] <cause>; <fix>")``."""
    return FileError(f"{what} {path} could not be written: {os_error_text(error)}; {fix}")


def _try_creating(folder: str, what: str, path: str) -> None:
    """Make the missing folders up to ``folder`` and a file in it, then remove all of it: every
    reason the system has to refuse (a link to nowhere, a name too long, a read-only or full
    file system, a quota) is found now, with its ``[Errno N]`` text, and nothing is left."""
    missing = []
    current = folder
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    made = []
    try:
        for name in reversed(missing):
            os.mkdir(name)
            made.append(name)
        handle, probe = tempfile.mkstemp(prefix=".nd_det_write_check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise FileError(
            f"{what} {path} cannot be created: {os_error_text(error)}"
            f"{f' ({error.filename})' if error.filename else ''}; choose another "
            "path or fix that folder"
        ) from None
    finally:
        for name in reversed(made):
            try:
                os.rmdir(name)
            except OSError:
                pass


def check_writable(path: str, what: str, folder: bool = False) -> None:
    """Raise FileError naming ``what`` (a key or flag) unless ``path`` can be created or
    rewritten: a folder (``folder=True``) or a file whose folder may not exist yet.  The common
    mistakes get their own words; for any other reason the folders are made and a file written
    in them for a moment (then removed), and the system's refusal is the message."""
    path = os.path.abspath(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise FileError(f"{what} {path} exists and is not a folder; give a folder path")
    if not folder and os.path.isdir(path):
        raise FileError(f"{what} {path} is a folder; give a file path")
    if not folder and os.path.exists(path):
        if not os.access(path, os.W_OK) or not os.access(os.path.dirname(path), os.W_OK):
            raise FileError(
                f"{what} {path} exists and cannot be replaced (permissions); choose another path"
            )
        return
    existing = nearest_existing_folder(path if folder else os.path.dirname(path))
    blocked = os.path.join(existing, os.path.relpath(path, existing).split(os.sep)[0])
    if os.path.exists(blocked) and not os.path.isdir(blocked):
        raise FileError(f"{what} {path} cannot be created: {blocked} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileError(
            f"{what} {path} cannot be created: {existing} is not writable; choose a "
            "folder you can write to"
        )
    _try_creating(path if folder else os.path.dirname(path), what, path)
