"""JSON files of runs and reports: read with an error naming the file, write atomically.

Standard JSON has no NaN or infinity: `json_safe` turns them into ``null`` (and tuples into
lists, mapping keys into strings) before writing, so every file adabatch writes is readable
by any JSON parser.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._atomic import atomic_write

__all__ = ["json_safe", "read_json", "write_json"]


def json_safe(value: Any) -> Any:
    """``value`` with NaN/±inf as None, tuples as lists and keys as strings (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def read_json(path: str | Path, error: Callable[[str], Exception] = ValueError) -> Any:
    """The parsed content of ``path``; an unreadable file raises ``error(message)``."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as file:
            return json.load(file)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read JSON: {exc}") from exc


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``json_safe(data)`` to ``path`` atomically, indented, with a final newline."""
    text = json.dumps(json_safe(data), indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text), text=True)
