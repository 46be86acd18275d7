"""Type tests of values read from JSON / YAML (stdlib only): ``bool`` is a subclass of ``int``
in Python, but ``true`` is never a count or a number in a config or an annotation file."""

__all__ = ["is_int", "is_number"]


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float, NaN and inf included (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
