"""The deprecation warning detectron2 and fvcore trigger on import (they call ``torch.jit.script``
at import time, which this torch deprecates): printed twice before every detection tool's first
line, about code no user of nd-det can change.  The tools turn it off before they import
detectron2; the library itself leaves the process's warning filters alone (the demo package
turns it off only around its own imports)."""
import warnings

__all__ = ["ignore_import_time_jit_warnings"]


def ignore_import_time_jit_warnings() -> None:
    """Add the one filter (torch's FutureWarning about ``torch.jit.script``, nothing else)."""
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`torch\.jit\.script` is deprecated")
