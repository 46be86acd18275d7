"""The deprecation warnings detectron2 and fvcore trigger on import, about code no user of nd-det
can change: they call ``torch.jit.script`` at import time, which this torch deprecates (printed
twice before every detection tool's first line), and ``detectron2.model_zoo`` imports
``pkg_resources``, which setuptools deprecates.  The tools turn these two off before they import
detectron2; the library itself leaves the process's warning filters alone (the demo package
turns them off only around its own imports)."""
import warnings

__all__ = ["ignore_detectron2_import_warnings"]


def ignore_detectron2_import_warnings() -> None:
    """Add the two filters (nothing else is hidden)."""
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"`torch\.jit\.script` is deprecated")
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=r"pkg_resources is deprecated as an API")
