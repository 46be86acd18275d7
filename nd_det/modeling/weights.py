"""Weights files named by config keys (``MODEL.WEIGHTS``, ``MODEL.DISTILL.TEACHER_WEIGHTS``):
a local path is checked, a URL is downloaded once through detectron2's PathManager (into its
cache, where every later reader finds it), and a failed download is reported as what it is, a
network failure, with the manual fix."""

import os

from detectron2.utils.file_io import Detectron2Handler, PathManager

from ..errors import FileError
from ..utils.text import first_line

__all__ = ["is_url", "https_url", "local_weights_file"]


def is_url(path: str) -> bool:
    return "://" in path


def https_url(url: str) -> str:
    """The https address behind a ``detectron2://`` URL (others are returned as they are)."""
    prefix = Detectron2Handler.PREFIX
    if url.startswith(prefix):
        return Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(prefix) :]
    return url


def local_weights_file(key: str, value: str) -> str:
    """A local file for the weights ``value`` of config key ``key``: the path itself (checked)
    or, for a URL, the downloaded copy.  Raises FileError naming the key."""
    if not value:
        raise FileError(f"{key} is empty: set it to a weights file (a path or a URL)")
    if not is_url(value):
        if not os.path.isfile(value):
            raise FileError(
                f"{key} {value}: file not found; point it at an existing weights file "
                "(.pkl or .pth) or a detectron2:// / https:// URL"
            )
        if not os.access(value, os.R_OK):
            raise FileError(f"{key} {value}: the file is not readable (permissions)")
        return value
    try:
        local = PathManager.get_local_path(value)
    except Exception as e:  # noqa: BLE001 - network and handler errors come in many types
        raise FileError(
            f"{key} {value}: could not download ({first_line(e)}): a network failure. On a "
            f"machine with network access fetch {https_url(value)} by hand, copy it here and set "
            f"{key} to its local path"
        ) from None
    if not os.path.isfile(local):
        raise FileError(
            f"{key} {value}: no handler can fetch this URL; use a local path, a detectron2:// "
            "or an https:// URL"
        )
    return local
