"""Means over seeds with their standard error: one definition for every table."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["mean_sem"]


def mean_sem(values: Iterable[float | None]) -> tuple[float, float]:
    """The mean of the defined values and its standard error.

    The standard error is the sample standard deviation (``n - 1`` in the denominator) over
    √n, and 0 for a single value. ``None`` values (undefined: a JSON null, a diverged run)
    are left out; with none left, both are ``nan``. A caller that must show a missing value
    differently (a diverged seed) checks for ``None`` before calling.
    """
    defined = [float(v) for v in values if v is not None]
    n = len(defined)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(defined) / n
    if n == 1:
        return mean, 0.0
    variance = math.fsum((v - mean) ** 2 for v in defined) / (n - 1)
    return mean, math.sqrt(variance / n)
