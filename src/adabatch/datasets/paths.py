"""Where data sets live: ``--dir``, then ``$ADABATCH_DATA``, then the default cache.

The default is ``$XDG_CACHE_HOME/adabatch/data`` (``~/.cache/adabatch/data`` when
``XDG_CACHE_HOME`` is unset). Each data set keeps its files in a sub-directory of a root
(``mnist/``, ``cifar-10-batches-py/``, ...), so one root holds them all.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "default_root", "search_roots"]

ENV_VAR = "ADABATCH_DATA"


def default_root() -> Path:
    """The documented default data root: ``$XDG_CACHE_HOME/adabatch/data``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "adabatch" / "data"


def search_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The data roots to search, in order: ``root`` (if given), ``$ADABATCH_DATA``, default.

    Duplicates are dropped, keeping the first occurrence.
    """
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(default_root())
    seen: set[Path] = set()
    roots = []
    for p in candidates:
        key = p.resolve() if p.exists() else p.absolute()
        if key not in seen:
            seen.add(key)
            roots.append(p)
    return roots
