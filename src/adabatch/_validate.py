"""Argument checks shared across the package: integers given as integers, with a floor."""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["as_int"]


def as_int(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as an int (numpy integers included; bool, float and str refused).

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number
