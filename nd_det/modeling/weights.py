"""Weights files named by config keys (``MODEL.WEIGHTS``, ``MODEL.DISTILL.TEACHER_WEIGHTS``):
a local path is checked, a URL is downloaded once through detectron2's PathManager (into its
cache, where every later reader finds it), and a failed download is reported as what it is, a
network failure, with the manual fix.  Every nd-det checkpointer reads them as data
(:class:`SafeCheckpointer`)."""

import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import Detectron2Handler, PathManager

from ..errors import FileError
from ..utils.safe_pickle import load_pickle, load_torch
from ..utils.text import first_line

__all__ = ["is_url", "https_url", "local_weights_file", "SafeCheckpointer"]


class SafeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that runs nothing a file carries: ``.pkl`` files (detectron2's plain
    ``pickle.load``) through :func:`~nd_det.utils.safe_pickle.load_pickle`, torch files with
    ``weights_only=True``; the model-zoo and Caffe2 layouts are read as detectron2 reads them."""

    def _load_file(self, filename):
        if not filename.endswith(".pkl"):
            return super()._load_file(filename)
        data = load_pickle(filename)
        if "model" in data and "__author__" in data:  # detectron2's model zoo
            return data
        data = data.get("blobs", data)  # Caffe2 / Detectron1: detection files keep "blobs"
        model = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f):
        return load_torch(f)


def is_url(path: str) -> bool:
    return "://" in path


def https_url(url: str) -> str:
    """The https address behind a ``detectron2://`` URL (others are returned as they are)."""
    prefix = Detectron2Handler.PREFIX
    if url.startswith(prefix):
        return Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(prefix) :]
    return url


def local_weights_file(key: str, value: str) -> str:
    """A local file for the weights ``value`` of config key ``key``: the path itself or, for a
    URL, the downloaded copy.  Raises FileError naming the key."""
    try:
        local = PathManager.get_local_path(value) if is_url(value) else value
    except Exception as e:  # noqa: BLE001 - network and handler errors come in many types
        raise FileError(
            f"{key} {value}: could not download ({first_line(e)}): a network failure. On a "
            f"machine with network access fetch {https_url(value)}, copy it here and set {key} "
            "to its local path"
        ) from None
    if not os.path.isfile(local):
        raise FileError(
            f"{key} {value}: file not found; point it at an existing weights file (.pkl or .pth) "
            "or a detectron2:// / https:// URL"
        )
    return local
