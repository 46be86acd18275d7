"""Run a tools/*.py script in this process (as ``python tools/x.py ...`` would) and capture its
exit status and stderr: the same code path as the command line, without a new interpreter."""

import contextlib
import io
import runpy
import sys


def run_tool_in_process(script: str, argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr text) of ``script`` run as __main__ with ``argv``."""
    err = io.StringIO()
    saved = sys.argv
    sys.argv = [script, *argv]
    code = 0
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    return code, err.getvalue()
