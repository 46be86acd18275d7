"""The one home of the filters for warnings that come from dependencies and that no user of nd-det
can act on.  Every tool in ``tools/`` calls :func:`ignore_detectron2_import_warnings` first,
before detectron2 or torch is imported; the library itself leaves the process's filters alone.
Each filter matches one message of one module and says why it is hidden; anything else, and
every warning about the user's own config, data or files, still prints."""

import logging
import warnings

__all__ = ["ignore_detectron2_import_warnings", "QUIET_LOG_MESSAGES"]

# (logger name, start of the message): torch log records (not Python warnings) that are hidden
QUIET_LOG_MESSAGES = (
    # detectron2's collect_env_info imports torch.utils.cpp_extension, which says this on any
    # machine with a CUDA toolkit but no GPU driver; a CPU run needs neither
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
    # detectron2's ROI poolers ask torch.fx whether it is tracing, in a form torch now deprecates
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
    # the launcher stops the other worker processes once one has ended with its status (an
    # ERROR line, a preemption): the stop itself is no problem of the user's
    ("torch.multiprocessing.spawn", "Terminating process %s via signal SIGTERM"),
)


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def ignore_detectron2_import_warnings() -> None:
    """Add the filters (nothing else is hidden; calling it again adds nothing)."""
    # detectron2 and fvcore call torch.jit.script at import time, which this torch deprecates
    # (printed twice before every detection tool's first line)
    warnings.filterwarnings(
        "ignore", category=FutureWarning, message=r"`torch\.jit\.script` is deprecated"
    )
    # detectron2.model_zoo imports pkg_resources, which setuptools deprecates
    warnings.filterwarnings(
        "ignore", category=UserWarning, message=r"pkg_resources is deprecated as an API"
    )
    # detectron2's anchor generator calls torch.meshgrid without the indexing argument (its
    # default, "ij", is what detectron2 means)
    warnings.filterwarnings(
        "ignore",
        category=UserWarning,
        message=r"torch\.meshgrid: in an upcoming release, it will be "
        r"required to pass the indexing argument",
    )
    for name, start in QUIET_LOG_MESSAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.start == start for f in logger.filters):
            logger.addFilter(_DropMessage(start))
