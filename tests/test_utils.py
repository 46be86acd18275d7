"""nd_det.utils.text.markdown_table and nd_det.utils.values (stdlib-only helpers)."""

import math

from nd_det.utils.text import markdown_table
from nd_det.utils.values import is_int, is_number

from .helpers.markdown import parse_markdown_table


def test_markdown_table_lines():
    lines = markdown_table(["model", "AP"], [("student", "1.25"), ["teacher", 40]])
    assert lines == ["| model | AP |", "|---|---|", "| student | 1.25 |", "| teacher | 40 |"]
    assert markdown_table(("a", "b", "c"), []) == ["| a | b | c |", "|---|---|---|"]
    rows = markdown_table(["x", "y"], iter([(1, None)]))
    assert rows[-1] == "| 1 | None |"


def test_markdown_table_parses_back():
    text = "\n".join(markdown_table(["model", "AP"], [("student", "1.25"), ("teacher", "40.00")]))
    assert parse_markdown_table(text) == [
        {"model": "student", "AP": "1.25"},
        {"model": "teacher", "AP": "40.00"},
    ]


def test_is_int_and_is_number_refuse_bools():
    assert is_int(3) and is_int(-1) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_number(3) and is_number(2.5) and is_number(math.inf) and is_number(math.nan)
    assert not is_number(False) and not is_number("1") and not is_number(None)
