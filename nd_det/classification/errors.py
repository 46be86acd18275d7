"""The mistakes a user of the classification tools can make, as :class:`~nd_det.errors.UserError`
subclasses (reported by ``tools/train_cls.py`` / ``tools/extract_cls_means.py`` as one
``ERROR:`` line, exit status 2).

Each class also derives from the built-in type the package raised before, so code that catches
``ValueError`` / ``KeyError`` / ``FileNotFoundError`` / ``ImportError`` still does.
"""
from typing import Any

from ..errors import UserError
from ..utils.registry import Registry, lookup

__all__ = ["ConfigError", "UnknownNameError", "MissingFileError", "BadFileError",
           "MissingDependencyError", "lookup_name"]


class ConfigError(UserError, ValueError):
    """A config value, or a combination of values, that cannot be used (the message names the
    key and the fix)."""


class UnknownNameError(UserError, KeyError):
    """A model / dataset / loss-term / parameter name that is not registered (the message lists
    the known ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the config or the command line points at that does not exist."""


class BadFileError(UserError, ValueError):
    """A file that exists but cannot be used: truncated, of another format or architecture."""


class MissingDependencyError(UserError, ImportError):
    """An optional package the config asks for is not installed."""


def lookup_name(registry: Registry, name, what: str) -> Any:
    """``utils.registry.lookup`` (``"unknown <what>; available: <sorted names>"``), its KeyError
    raised as an UnknownNameError."""
    try:
        return lookup(registry, name, what)
    except KeyError as error:
        raise UnknownNameError(error.args[0]) from None
