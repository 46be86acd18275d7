"""Short renderings of lists and exceptions for one-line messages, and Markdown tables
(stdlib only)."""

from collections.abc import Iterable, Sequence

__all__ = ["short_list", "first_line", "markdown_table"]


def short_list(items: Iterable, limit: int = 8) -> str:
    """``"a, b, c"``, or the first ``limit`` items and ``"... (N in all)"``."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def first_line(error: BaseException) -> str:
    """``"TypeName: first line of the message"`` (cut at 200 characters)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """The lines of a Markdown table: the header, its ``|---|`` separator, one line per row."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows
    ]
