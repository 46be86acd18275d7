"""Checks that a file or folder can be written, made before any work is done (stdlib only)."""
import os

from ..errors import FileError


__all__ = [ "nearest_existing_folder", "check_writable"]


def nearest_existing_folder(path: str) -> str:
    """``path`` itself if it is a folder, else its nearest ancestor that exists."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_writable(path: str, what: str, folder: bool = False) -> None:
    """Raise FileError naming ``what`` (a key or flag) unless ``path`` can be created or
    rewritten: a folder (``folder=True``) or a file whose folder may not exist yet."""
    path = os.path.abspath(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise FileError(f"{what} {path} exists and is not a folder; give a folder path")
    if not folder and os.path.isdir(path):
        raise FileError(f"{what} {path} is a folder; give a file path")
    if not folder and os.path.exists(path):
        if not os.access(path, os.W_OK) or not os.access(os.path.dirname(path), os.W_OK):
            raise FileError(f"{what} {path} exists and cannot be replaced (permissions); "
                            "choose another path")
        return
    existing = nearest_existing_folder(path if folder else os.path.dirname(path))
    blocked = os.path.join(existing, os.path.relpath(path, existing).split(os.sep)[0])
    if os.path.exists(blocked) and not os.path.isdir(blocked):
        raise FileError(f"{what} {path} cannot be created: {blocked} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileError(f"{what} {path} cannot be created: {existing} is not writable; choose a "
                        "folder you can write to")
