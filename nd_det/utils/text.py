"""Short renderings of lists and exceptions for one-line messages (stdlib only)."""
from typing import Iterable

__all__ = ["short_list", "first_line"]


def short_list(items: Iterable, limit: int = 8) -> str:
    """``"a, b, c"``, or the first ``limit`` items and ``"... (N in all)"``."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def first_line(error: BaseException, limit: int = 200) -> str:
    """``"TypeName: first line of the message"`` (cut at ``limit`` characters)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:limit]}"
