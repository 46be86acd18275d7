"""Formatting of durations for progress lines (elapsed time, ETA)."""

__all__ = ["format_duration"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a non-negative number of seconds (negative values count as 0)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
