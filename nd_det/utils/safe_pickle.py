"""Files a user points at, read as data: nothing they carry is run (torch, numpy and stdlib only).

* :func:`load_torch`: a torch file (``.pth``, ``.pt``: checkpoints, torchvision weights,
  class-mean tables) through ``torch.load(weights_only=True)``;
* :func:`load_pickle`: a detectron2 / Caffe2 ``.pkl`` (model zoo, ImageNet backbones, converted
  weights) through an unpickler that admits only dicts, lists, tuples, strings, numbers and
  numpy arrays, scalars and dtypes (the only objects such files hold).

``pickle.load`` would import and call whatever the file names; torch's restricted unpickler
reads torch's file layout only (no numpy arrays in a plain pickle), so ``.pkl`` files get the
allow-list of the pickle documentation's "Restricting Globals" recipe.  A file that asks for
anything else is refused with one :class:`~nd_det.errors.FileError` line naming the file and
what it asked to load, before any of its content is used.
"""

import collections
import pickle
import re

import numpy as np
import torch

from ..errors import FileError

__all__ = ["load_pickle", "load_torch"]

# what unpickling detectron2's / Caffe2's .pkl files needs (numpy 1 wrote numpy.core.*; protocol
# 2 writes bytes through _codecs.encode; protocol 5 arrays through _frombuffer)
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): __import__("_codecs").encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_core = getattr(np, "_core", None) or np.core  # numpy 2, numpy 1
for _name in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_name}.multiarray", "_reconstruct")] = _core.multiarray._reconstruct
    _ALLOWED[(f"{_name}.multiarray", "scalar")] = _core.multiarray.scalar
    _ALLOWED[(f"{_name}.numeric", "_frombuffer")] = _core.numeric._frombuffer


class _Refused(Exception):
    pass


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


def _refusal(path, asked: str) -> FileError:
    return FileError(
        f"{path} asks to load {asked} when unpickled: refused, nothing of it was run (a weights "
        "file holds only tensors, arrays and plain data; if you trust it, re-save its state dict)"
    )


def load_pickle(path):
    """The content of the pickle file ``path`` (latin-1 strings, as detectron2 reads Python 2
    pickles); FileError if it asks for anything but plain data and numpy arrays."""
    with open(path, "rb") as stream:
        try:
            return _DataUnpickler(stream, encoding="latin1").load()
        except _Refused as refused:
            raise _refusal(path, str(refused)) from None


def load_torch(path, **kwargs):
    """``torch.load(path, map_location="cpu", weights_only=True, **kwargs)``; torch's refusal of
    an object that is not plain data becomes one FileError line naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        asked = re.search(r"GLOBAL ([\w.]+)", str(error))  # torch's refusal names it so
        if asked is None:
            raise
        raise _refusal(path, asked.group(1)) from None
