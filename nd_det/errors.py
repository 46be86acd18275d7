"""The one error type for mistakes a user made, and the one way tools report them.

Every error caused by what the user typed or pointed at (a config key, a file, a dataset, a
command-line flag) derives from :class:`UserError`.  The command-line tools print it as a single
``ERROR: <message>`` line on stderr, without a traceback, and exit with status 2; anything else
is a bug: Python's traceback and exit status 1.

This module imports nothing but the standard library, so the torch-only loss core and the
classification package use it too.
"""
import argparse
import sys
from typing import Callable, List, Optional

__all__ = ["UserError", "EXIT_USER_ERROR", "ERROR_PREFIX", "report_user_error", "run_cli",
           "one_line_usage_errors"]

EXIT_USER_ERROR = 2
ERROR_PREFIX = "ERROR: "


class UserError(Exception):
    """A mistake in the user's input; the message names the key/file/flag and the fix."""


def report_user_error(error: BaseException) -> int:
    """Print ``error`` as the single ``ERROR:`` line; returns the exit status for it."""
    message = " ".join(str(error).split())  # one line, whatever the message's layout
    print(ERROR_PREFIX + message, file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_cli(main: Callable[[Optional[List[str]]], Optional[int]],
            argv: Optional[List[str]] = None) -> int:
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
