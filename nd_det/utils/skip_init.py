"""Build a model whose every weight is loaded next, without drawing its random values.

torch's own ``torch.nn.utils.skip_init`` builds one module class on the meta device: that loses
the buffers a constructor computes (detectron2's anchors) and takes no registry builder, so it
does not serve a whole detector or classifier."""

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["without_random_init"]


@contextlib.contextmanager
def without_random_init() -> Iterator[None]:
    """Modules built inside skip ``torch.nn.init``'s initialisers: their tensors are allocated,
    not filled (they hold whatever their memory held), while buffers computed otherwise, e.g.
    anchors, are kept.  Only for a model whose every parameter and buffer a strict load
    replaces before any use."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    for name in names:
        setattr(nn.init, name, _leave_as_is)
    try:
        yield
    finally:
        for name, initializer in saved.items():
            setattr(nn.init, name, initializer)


def _leave_as_is(tensor, *args, **kwargs):
    return tensor
