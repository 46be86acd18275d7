"""Where the demo's detailed logs go: a file, so that the console shows only the progress lines.

Inside :func:`log_to_file`, the loggers of detectron2, fvcore, iopath and nd_det (and Python
warnings) write at INFO level to the given file and not to the console; on exit everything is
put back as it was.
"""
import contextlib
import logging
import os

__all__ = ["LOGGER_NAMES", "log_to_file"]

LOGGER_NAMES = ("detectron2", "fvcore", "iopath", "nd_det", "torch", "py.warnings")


@contextlib.contextmanager
def log_to_file(path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s",
                                           datefmt="%H:%M:%S"))
    saved = []
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for logger, level, propagate, handlers in saved:
            logger.removeHandler(handler)
            for old in handlers:
                logger.addHandler(old)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()
