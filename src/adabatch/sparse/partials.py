"""AdaBatch's aggregation split over workers: per-share partial sums and counts, then combined.

Défossez & Bach (arXiv 1711.01761) aggregate a batch B by dⱼ = sⱼ / cⱼ with sⱼ = Σ_{i∈B} φ′ᵢxᵢⱼ
and cⱼ = #{i ∈ B : xᵢⱼ ≠ 0} (`adabatch.sparse.aggregate`). Both are sums over the rows, so a
batch cut into W shares B⁽ʳ⁾ can be aggregated by parts:

    worker r:  sⱼ⁽ʳ⁾ = Σ_{i∈B⁽ʳ⁾} φ′ᵢxᵢⱼ,   cⱼ⁽ʳ⁾ = #{i ∈ B⁽ʳ⁾ : xᵢⱼ ≠ 0}   (j ∈ supp B⁽ʳ⁾)
    combine:   dⱼ = Σᵣ sⱼ⁽ʳ⁾ / Σᵣ cⱼ⁽ʳ⁾   (``rule="mean"``: Σᵣ sⱼ⁽ʳ⁾ / |B|)

A `Partial` (`share_partial`) holds one share's sums and counts on its own support, so its
size is the share's nonzeros, never d; `combine_partials` adds them.

Example: rows x₀ = (1, 1, 0), x₁ = (1, 0, 1) with φ′ = (0.5, −1) on W = 2 workers give the
partials s⁽⁰⁾ = (0.5, 0.5, ·), s⁽¹⁾ = (−1, ·, −1) and d = (−0.25, 0.5, −1).

Exactness. The sequential `aggregate` sums each column over the batch rows in order; here
each share sums its own rows in order and the partials are then added in worker order, so
dⱼ is bitwise the sequential value whenever column j occurs in one share only, and otherwise
differs by the re-association (a + b) + (c + e) vs ((a + b) + c) + e, i.e. by rounding
(≈ 1e-16 relative). With one share it is `aggregate`'s value bitwise.
"""

# X_share: the matrix name of the maths.

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._problem import prepare_csr
from .aggregate import _check_coef, check_rule, support_sums

__all__ = ["Partial", "combine", "combine_partials", "share_partial"]


@dataclasses.dataclass(frozen=True)
class Partial:
    """One worker's share of a batch: sⱼ⁽ʳ⁾ and cⱼ⁽ʳ⁾ on the share's support.

    Attributes:
        columns: the support, sorted distinct column indices (int64).
        sums: sⱼ⁽ʳ⁾ = Σ_{i in share} φ′ᵢxᵢⱼ for each column of the support (float64).
        counts: cⱼ⁽ʳ⁾ = #{i in share : xᵢⱼ ≠ 0} (int64, ≥ 1).
        rows: the number of rows in the share (for ``rule="mean"``).
    """

    columns: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    rows: int


def share_partial(X_share: Any, coef: Any) -> Partial:
    """The `Partial` of one share: rows ``X_share`` (CSR) with loss derivatives ``coef``.

    Sums run over the rows in order, as `aggregate` does; stored zeros are not occurrences.

    Raises:
        TypeError: ``X_share`` is not CSR.
        ValueError: ``coef`` is not one finite factor per row.
    """
    X = prepare_csr(X_share, "X_share")
    b = X.shape[0]
    coef = _check_coef(coef, b)
    rowid = np.repeat(np.arange(b, dtype=np.int64), np.diff(X.indptr))
    columns, sums, counts = support_sums(X.indices.astype(np.int64), coef[rowid] * X.data)
    return Partial(columns, sums, counts.astype(np.int64), b)


def combine_partials(
    partials: Sequence[Partial], *, rule: str = "adabatch"
) -> tuple[np.ndarray, np.ndarray]:
    """The batch direction from the workers' partials: ``(support, d on the support)``.

    ``rule="adabatch"``: dⱼ = Σᵣ sⱼ⁽ʳ⁾ / Σᵣ cⱼ⁽ʳ⁾; ``"mean"``: dⱼ = Σᵣ sⱼ⁽ʳ⁾ / Σᵣ rows⁽ʳ⁾.
    Partials are added in list order. Off the support d is 0, so the dense direction is
    ``out = zeros(d); out[support] = d``, which equals ``aggregate(X_B, φ′)`` up to rounding.

    Raises:
        ValueError: no partials, no rows in all, or an unknown rule.
    """
    rule = check_rule(rule)
    if not partials:
        raise ValueError("combine_partials needs at least one Partial, got none")
    rows = sum(int(p.rows) for p in partials)
    if rows < 1:
        raise ValueError("the partials hold 0 rows in all; a batch needs at least one sample")
    return combine(
        [np.asarray(p.columns) for p in partials],
        [np.asarray(p.sums, dtype=np.float64) for p in partials],
        [np.asarray(p.counts) for p in partials],
        rows,
        rule,
    )


def combine(
    columns: list[np.ndarray],
    sums: list[np.ndarray],
    counts: list[np.ndarray],
    rows: int,
    rule: str,
) -> tuple[np.ndarray, np.ndarray]:
    """`combine_partials` on raw arrays, unchecked (the solver passes column slices of each)."""
    if len(columns) == 1:
        # Nothing to merge: the single partial's support is the batch support (sorted, unique).
        support, s, c = columns[0], sums[0], counts[0]
    else:
        # `inv` maps each partial entry to its column's slot in the union; bincount then adds
        # the entries in list order (worker 0 first), starting from 0.0, which is exact.
        support, inv = np.unique(np.concatenate(columns), return_inverse=True)
        k = support.shape[0]
        s = np.bincount(inv, weights=np.concatenate(sums), minlength=k)
        c = np.bincount(inv, weights=np.concatenate(counts), minlength=k)
    return support, (s / rows if rule == "mean" else s / c)
