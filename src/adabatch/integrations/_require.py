"""Import an optional framework, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def require(candidates: tuple[str, ...], *, minimum: str, extra: str, what: str) -> ModuleType:
    """The first importable module of ``candidates``, at least version ``minimum``.

    Raises:
        ImportError: none is installed, or the installed one is older than ``minimum``;
            the message names the ``adabatch[extra]`` that installs a good one.
    """
    found: list[str] = []
    for name in candidates:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        version = getattr(module, "__version__", "0")
        if _version_tuple(version) >= _version_tuple(minimum):
            return module
        found.append(f"{name} {version}")
    have = f" (found {', '.join(found)})" if found else ""
    raise ImportError(
        f"{what} needs {' or '.join(candidates)} >= {minimum}{have}: install it with "
        f"`pip install adabatch[{extra}]`"
    )
