"""Census of dtype changes in a piece of code under mixed precision (the bf16 investigation).

Under autocast every op on the lower-precision list casts its float32 inputs (weights
included) to bfloat16, and every op on the float32 list casts back; mixed-dtype elementwise ops
promote to float32 silently.  Each of these reads and writes whole tensors: on activations the
size of an FPN level this "dtype ping-pong" costs memory bandwidth, and on a small batch the
extra kernels cost launch time.  :func:`dtype_census` runs a function under a dispatch mode and
attributes every explicit cast (``_to_copy`` that changes the dtype) and every op that reads
bfloat16/float16 together with float32 and writes float32 (a promotion) to the innermost
``nn.Module`` running it (ops of the backward pass run outside any module), with element
counts.
"""
from collections import defaultdict
from typing import Callable, Dict, List

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["dtype_census"]

_LOW = {torch.bfloat16, torch.float16}
_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
          torch.float64: "fp64"}


def _floating_tensors(values):
    return [v for v in tree_leaves(values) if isinstance(v, torch.Tensor) and v.is_floating_point()]


class _Census(TorchDispatchMode):
    def __init__(self, where: Callable[[], str]):
        super().__init__()
        self.where = where
        self.events: Dict[tuple, List[int]] = defaultdict(lambda: [0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name.split("::")[-1]
        inputs = _floating_tensors(args)
        if name == "_to_copy" and inputs and isinstance(out, torch.Tensor):
            src, dst = inputs[0].dtype, out.dtype
            if src != dst and out.is_floating_point():
                self._add("cast", name, src, dst, out.numel())
        elif inputs:
            # an op that reads bfloat16/float16 and writes float32: a silent promotion (ops
            # that take float32 affine parameters with low-precision data and write low
            # precision, like batch_norm, are not counted: they copy nothing)
            low = [t for t in inputs if t.dtype in _LOW and t.dim() > 0]
            outs = _floating_tensors(out)
            if low and outs and outs[0].dtype == torch.float32 and \
                    any(t.dtype == torch.float32 for t in inputs):
                self._add("promote", name, low[0].dtype, torch.float32,
                          max(t.numel() for t in low))
        return out

    def _add(self, kind, op, src, dst, numel):
        entry = self.events[(self.where(), kind, op, _SHORT.get(src, str(src)),
                             _SHORT.get(dst, str(dst)))]
        entry[0] += 1
        entry[1] += numel


def dtype_census(fn: Callable[[], object], roots: Dict[str, nn.Module],
                 depth: int = 3) -> List[Dict]:
    """Run ``fn()`` and return the dtype changes it made, grouped by module path (``roots``
    names the top modules, e.g. ``{"student": model, "teacher": model.teacher}``; paths are cut
    to ``depth`` components below that name), kind (``cast`` / ``promote``), op and direction;
    the largest by element count first."""
    names = {}
    for root_name, root in roots.items():
        for name, m in root.named_modules():
            names.setdefault(id(m), f"{root_name}.{name}" if name else root_name)
    stack: List[str] = []

    def push(module, args):
        name = names.get(id(module))
        if name is not None:
            stack.append(".".join(name.split(".")[:depth + 1]))

    def pop(module, args, output):
        if names.get(id(module)) is not None and stack:
            stack.pop()

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(push),
               torch.nn.modules.module.register_module_forward_hook(pop)]
    census = _Census(lambda: stack[-1] if stack else "backward or outside modules")
    try:
        with census:
            fn()
    finally:
        for h in handles:
            h.remove()
    rows = [
        {"module": where, "kind": kind, "op": op, "from": src, "to": dst, "calls": c,
         "elements": n}
        for (where, kind, op, src, dst), (c, n) in census.events.items()
    ]
    return sorted(rows, key=lambda r: -r["elements"])
