"""fvcore registries keyed by the names configs use, with one clear error for unknown names
(the classification registries and the detection distillation terms).

fvcore's ``Registry.register`` takes an entry's name from its ``__name__``; these registries key
entries by config names ("resnet32x4", "reviewkd", "cifar100") that are not the Python names of the
registered objects, so ``register_as`` passes the name explicitly.
"""

from typing import Any

from fvcore.common.registry import Registry

from ..errors import ConfigError

__all__ = ["Registry", "register_as", "registered_names", "lookup"]


def register_as(registry: Registry, name: str, obj: Any, kind: str) -> None:
    """Adds ``obj`` under ``name``; an empty name or a second entry of the same name is a
    ``ValueError`` (fvcore would only assert)."""
    if not name:
        raise ValueError(f"{kind} needs a non-empty name; got {name!r}")
    if name in registry:
        raise ValueError(f"{kind} {name!r} is registered twice")
    registry._do_register(name, obj)  # fvcore's own registration, with our name


def registered_names(registry: Registry) -> list[str]:
    return sorted(name for name, _ in registry)


def lookup(registry: Registry, name: str, what: str) -> Any:
    """The entry under ``name``, else ``ConfigError("unknown <what>; available: <names>")``."""
    if name not in registry:
        raise ConfigError(f"unknown {what}; available: {', '.join(registered_names(registry))}")
    return registry.get(name)
