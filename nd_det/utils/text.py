"""Short renderings of lists and exceptions for one-line messages, and Markdown tables
(stdlib only)."""
from typing import Iterable, List, Sequence

__all__ = ["short_list", "first_line", "key_problems", "markdown_table"]


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


def key_problems(missing: Sequence[str], wrong_shapes: Sequence[str], unexpected: Sequence[str],
                 unexpected_label: str = "unexpected keys", limit: int = 5) -> List[str]:
    """The parts of a weights-file mismatch message, counted and shortened: ``"missing 3 keys:
    a, b, c"``, ``"2 shape mismatches: ..."``, ``"4 <unexpected_label>: ..."`` (those that
    apply, in the order given; shape mismatches shortened to ``limit`` // 2 + 1)."""
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {short_list(missing, limit)}")
    if wrong_shapes:
        problems.append(f"{len(wrong_shapes)} shape mismatches: "
                        f"{short_list(wrong_shapes, limit // 2 + 1)}")
    if unexpected:
        problems.append(f"{len(unexpected)} {unexpected_label}: "
                        f"{short_list(unexpected, limit)}")
    return problems


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> List[str]:
    """The lines of a Markdown table: the header, its ``|---|`` separator, one line per row."""
    return (["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
            + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])
