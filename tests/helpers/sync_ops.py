"""Find operations that force a host-device synchronisation, or build tensors from Python data,
in a piece of code (e.g. the distillation loss path: every term's forward and the backward).

A ``TorchDispatchMode`` sees every ATen operation after autograd and autocast, on any device,
so the check runs on CPU too.  Flagged: the ops of :data:`SYNC_OPS` (each with the reason),
indexing with a boolean mask (a data-dependent output size) and copies between CPU and another
device.
"""

from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["SYNC_OPS", "find_sync_ops"]

SYNC_OPS = {
    "_local_scalar_dense": "copies a value to the host (.item(), float(), bool(), if tensor:)",
    "nonzero": "data-dependent output size (nonzero / boolean-mask indexing / where(cond))",
    "nonzero_static": "data-dependent output",
    "masked_select": "data-dependent output size",
    "_unique": "data-dependent output size",
    "_unique2": "data-dependent output size",
    "unique_dim": "data-dependent output size",
    "unique_consecutive": "data-dependent output size",
    "lift_fresh": "tensor built from Python data (torch.tensor(...))",
    "lift_fresh_copy": "tensor built from Python data (torch.tensor(...))",
    "_assert_async": "device-side assert",
}


_INDEX_OPS = ("index", "index_put", "index_put_", "_index_put_impl_")


def _tensors(values):
    return [v for v in tree_leaves(values) if isinstance(v, torch.Tensor)]


class _SyncOpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.found: list[dict[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        out = func(*args, **kwargs)
        reason = SYNC_OPS.get(name)
        if reason is None and name in _INDEX_OPS:
            if any(t.dtype in (torch.bool, torch.uint8) for t in _tensors(args[1:2])):
                reason = "boolean-mask indexing (data-dependent output size)"
        if reason is None and name in ("_to_copy", "copy_"):
            devices = {t.device.type for t in _tensors([out, *args])}
            if "cpu" in devices and len(devices) > 1:
                reason = "copy between the host and a device"
        if reason is not None:
            self.found.append({"op": name, "why": reason})
        return out


def find_sync_ops(fn: Callable[[], object]) -> list[dict[str, str]]:
    """Run ``fn()`` and list the synchronising / Python-data operations it executed."""
    recorder = _SyncOpRecorder()
    with recorder:
        fn()
    return recorder.found
