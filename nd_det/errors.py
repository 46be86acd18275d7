"""The error types for mistakes a user made, and the one way tools report them.

Every error caused by what the user typed or pointed at (a config key, a file, a dataset, a
command-line flag) is a :class:`UserError`, of one of a few kinds:

* :class:`ConfigError`: a config key, a value, a flag, or a combination of them (student vs
  teacher vs distillation terms, weights that do not fit the model the config builds);
* :class:`DataError`: a dataset, an annotation, an image or a class-means table whose content
  cannot be used;
* :class:`FileError`: a file or folder that is missing, unreadable, damaged, or cannot be
  written (the ``[Errno N]`` cause named when the system gave one);
* :class:`NonFiniteError`: training diverged (a NaN/inf loss or weight);
* :class:`ExportError`: an exported model that does not reproduce the student: nothing written;
* :class:`MissingDependencyError`: an optional package that is not installed.

The command-line tools print a ``UserError`` as a single ``ERROR: <message>`` line on stderr,
without a traceback, and exit with status 2; anything else is a bug: Python's traceback and
exit status 1.

This module imports nothing but the standard library, so the torch-only loss core and the
classification package use it too.
"""

import argparse
import contextlib
import pickle
import sys
from typing import Callable, Optional

__all__ = [
    "UserError",
    "ConfigError",
    "DataError",
    "FileError",
    "NonFiniteError",
    "ExportError",
    "MissingDependencyError",
    "EXIT_USER_ERROR",
    "ERROR_PREFIX",
    "report_user_error",
    "run_cli",
    "one_line_usage_errors",
    "os_error_text",
    "input_stage",
    "FOREIGN_INPUT_ERRORS",
]

EXIT_USER_ERROR = 2
ERROR_PREFIX = "ERROR: "


class UserError(Exception):
    """A mistake in the user's input; the message names the key/file/flag and the fix."""


class ConfigError(UserError, ValueError):
    """A config key or value, a flag, or a combination of them that cannot work."""


class DataError(UserError, ValueError):
    """A dataset, annotation file, image or class-means table whose content cannot be used."""


class FileError(UserError, OSError):
    """A file or folder that is missing, unreadable, damaged or cannot be written."""


class NonFiniteError(UserError, FloatingPointError):
    """A NaN/inf loss or weight: training stops, nothing non-finite is written."""


class ExportError(UserError, RuntimeError):
    """An exported model that does not reproduce the student; nothing is written."""


class MissingDependencyError(UserError, ImportError):
    """An optional package a command needs is not installed (the message gives the pip line)."""


# What detectron2, yacs, fvcore, pycocotools, omegaconf and torch raise for a bad value or file
# while a config is read, a dataset registered or a model built, before any work starts: their
# messages name the value.  Inside ``input_stage(what)`` such an exception becomes one
# ConfigError "<what>: <Type>: <message>; <fix>" (the one table of foreign errors; nd-det's own
# checks raise UserError directly).  Searched in order: the first matching type gives the fix.
FOREIGN_INPUT_ERRORS = (
    (FileNotFoundError, "check the path (a relative one is taken from the current folder)"),
    ((OSError, EOFError, pickle.UnpicklingError), "check that the file is complete and readable"),
    (KeyError, "check the name's spelling against the config or the registry"),
    (TypeError, "give the value the type its default has"),
    ((AssertionError, ValueError, IndexError, RuntimeError), "fix the value the message names"),
)


@contextlib.contextmanager
def input_stage(what: str):
    """Reading or building from the user's input: a foreign exception of
    :data:`FOREIGN_INPUT_ERRORS` becomes one :class:`ConfigError` naming ``what``."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        fix = next((f for kinds, f in FOREIGN_INPUT_ERRORS if isinstance(error, kinds)), None)
        if fix is None:
            raise
        message = " ".join(str(error).split()).strip("'\"")[:300]
        raise ConfigError(f"{what}: {type(error).__name__}: {message}; {fix}") from error


def os_error_text(error: OSError) -> str:
    """``"[Errno 28] No space left on device"``: the cause of an OSError without its path."""
    if error.errno is None:
        return str(error)
    return f"[Errno {error.errno}] {error.strerror}"


def report_user_error(error: BaseException) -> int:
    """Print ``error`` as the single ``ERROR:`` line; returns the exit status for it."""
    message = " ".join(str(error).split())  # one line, whatever the message's layout
    print(ERROR_PREFIX + message, file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_cli(
    main: Callable[[Optional[list[str]]], Optional[int]], argv: Optional[list[str]] = None
) -> int:
    """Run a tool's ``main(argv)``; a :class:`UserError` becomes one line and exit status 2."""
    try:
        return int(main(argv) or 0)
    except UserError as error:
        return report_user_error(error)


def one_line_usage_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad command line (unknown flag, missing value) as the same single
    ``ERROR:`` line, exit status 2, instead of argparse's usage block."""

    def error(message: str):
        report_user_error(UserError(f"{message} (see {parser.prog} --help)"))
        sys.exit(EXIT_USER_ERROR)

    parser.error = error
    return parser
