"""Old public names that still resolve, with a warning that names the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["renamed"]


def renamed(module: str, names: Mapping[str, str], namespace: Mapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves each old name of ``names`` as its new one, with a warning.

    Args:
      module: the module's public name, for the messages (``"snnjax"``).
      names: ``{old name: new name}``; the new names live in ``namespace``.
      namespace: the module's ``globals()``.

    Returns:
      The ``__getattr__`` function to assign in the module (PEP 562).
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            warnings.warn(
                f"{module}.{name} is deprecated and will be removed: use {module}.{names[name]} (same "
                "arguments).",
                DeprecationWarning,
                stacklevel=2,
            )
            return namespace[names[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
