"""Argument checks shared across the package, each with an error naming the value received.

Conventions, the same everywhere: a value of the wrong type raises ``TypeError``, a value of
the right type outside its range raises ``ValueError``; the message reads "NAME must be ...,
got VALUE" and, where a fix is not obvious, ends with a hint (``hint="; use ..."``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any

from ._types import LOSS_REDUCTIONS

__all__ = [
    "as_int",
    "as_optional_int",
    "check_choice",
    "check_nonnegative",
    "check_positive",
    "check_reduction",
]


def as_int(value: Any, name: str, minimum: int | None = None, *, hint: str = "") -> int:
    """``value`` as an int (numpy integers included; bool, float and str refused).

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}{hint}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}{hint}"
        ) from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}{hint}")
    return number


def as_optional_int(
    value: Any, name: str, minimum: int | None = None, *, hint: str = ""
) -> int | None:
    """None, or ``value`` checked by `as_int` (the range error says that None is allowed)."""
    if value is None:
        return None
    number = as_int(value, name, hint=hint)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum} (or None), got {number}{hint}")
    return number


def _as_float(name: str, value: Any, hint: str) -> float:
    if isinstance(value, (bool, str, bytes)):  # float("0.1") would pass a string through
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}{hint}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number, got {type(value).__name__} {value!r}{hint}"
        ) from None


def check_positive(name: str, value: Any, *, hint: str = "") -> float:
    """``value`` as a float that is positive and finite, else an error naming it."""
    number = _as_float(name, value, hint)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive finite number{hint}, got {value!r}")
    return number


def check_nonnegative(name: str, value: Any, *, hint: str = "") -> float:
    """``value`` as a float that is finite and ≥ 0, else an error naming it."""
    number = _as_float(name, value, hint)
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}{hint}")
    return number


def check_choice(name: str, value: Any, choices: Iterable[str], *, hint: str = "") -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}{hint}"
        )
    return value


def check_reduction(loss_reduction: Any) -> str:
    """``loss_reduction`` if it is "mean" or "sum", else a ValueError saying what it means."""
    return check_choice(
        "loss_reduction",
        loss_reduction,
        LOSS_REDUCTIONS,
        hint="; it says how your loss_fn reduces over the batch (e.g. nn.CrossEntropyLoss() "
        "is 'mean')",
    )
