"""Sums of tensors without the int 0 that builtin `sum` starts from (it would upcast dtypes)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

__all__ = ["sum_of"]


def sum_of(terms: Iterable[Tensor], *, empty: Tensor | None = None) -> Tensor:
    """Σ of ``terms`` in order; ``empty`` when there are none (default: an error)."""
    total: Tensor | None = None
    for term in terms:
        total = term if total is None else total + term
    if total is None:
        if empty is None:
            raise ValueError("sum_of() got no terms")
        return empty
    return total
