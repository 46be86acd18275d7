"""Paths a tool is about to write, checked before any work is done, and the one text for a run's
file that could not be written (stdlib only)."""

import contextlib
import os
import tempfile

from ..errors import FileError, os_error_text
from .text import short_list

__all__ = ["check_writable", "check_overwrite", "write_failed", "writing", "not_found"]


def write_failed(what: str, path: str, error: OSError, fix: str) -> FileError:
    """``FileError("<what> <path> could not be written: [Errno N] <cause>; <fix>")``."""
    return FileError(f"{what} {path} could not be written: {os_error_text(error)}; {fix}")


@contextlib.contextmanager
def writing(what: str, path: str, fix: str):
    """Writing ``path`` (named by ``what``): an OSError the system raises there (a full disk, a
    folder it refuses) becomes one :func:`write_failed` line with ``fix``."""
    try:
        yield
    except OSError as e:
        raise write_failed(what, path, e, fix) from None


def not_found(path: str) -> str:
    """``"<path> not found in <folder>"``: the folder it was looked for in (a relative path is
    taken from the current folder)."""
    return f"{path} not found in {os.path.dirname(os.path.abspath(path))}"


def _probe(folder: str) -> None:
    """Make the missing folders up to ``folder`` and a file in it, then remove all of it: every
    reason the system has to refuse (a link to nowhere, a name too long, a read-only or full file
    system, a quota) is an OSError now, with its ``[Errno N]``, and nothing is left."""
    made = []
    try:
        for name in reversed(list(_ancestors(folder))):
            os.mkdir(name)
            made.append(name)
        handle, probe = tempfile.mkstemp(prefix=".nd_det_write_check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    finally:
        for name in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(name)


def check_writable(path: str, what: str, folder: bool = False) -> None:
    """Raise FileError naming ``what`` (a key or flag) unless ``path`` (a folder when ``folder``,
    else a file) can be created or replaced, found by :func:`_probe`."""
    path = os.path.abspath(path)
    kind, target = ("folder", path) if folder else ("file", os.path.dirname(path))
    if os.path.exists(path) and os.path.isdir(path) != folder:
        raise FileError(f"{what} {path} exists and is not a {kind}; give a new {kind} name")
    blocker = next((p for p in _ancestors(target) if os.path.isfile(p)), None)
    if blocker:
        raise FileError(f"{what} {path} cannot be created: {blocker} is a file")
    try:
        _probe(target)
    except OSError as error:
        cause = f"{os_error_text(error)}{f' ({error.filename})' if error.filename else ''}"
        raise FileError(
            f"{what} {path} cannot be created: {cause}; choose another path or fix that folder"
        ) from None


def _ancestors(folder: str):
    """``folder`` and its parents, up to the first that exists."""
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        yield folder
        folder = os.path.dirname(folder)


def check_overwrite(path: str, what: str, overwrite: bool) -> None:
    """A tool's output that exists (a file, or a folder with files in it) is refused unless
    ``overwrite`` (its ``--overwrite`` flag); with it, the tool says on stdout what it replaces."""
    held = sorted(os.listdir(path)) if os.path.isdir(path) else [""] * os.path.exists(path)
    if held and not overwrite:
        raise FileError(
            f"{what} {path} exists; pass --overwrite to replace it, or choose another path"
        )
    if held:
        inside = f" ({short_list(held, 6)})" if held != [""] else ""
        print(f"--overwrite: replacing {what} {path}{inside}", flush=True)
