"""AdaBatch's per-coordinate aggregation of a sparse mini-batch (Défossez & Bach, arXiv 1711.01761).

For a linear model, sample i's gradient is φ′ᵢ·xᵢ: it lives on the support of xᵢ. Averaging a
batch of b such gradients divides every coordinate by b, so a feature that occurs in one row of
the batch moves b times less than it would under single-sample SGD. AdaBatch divides each
coordinate by the number of rows that actually contain it:

    sⱼ = Σᵢ coefᵢ·Xᵢⱼ,   cⱼ = #{i : Xᵢⱼ ≠ 0},   dⱼ = sⱼ / cⱼ   (dⱼ = 0 where cⱼ = 0),

so a coordinate seen once takes a full single-sample step and a dense coordinate is averaged as
usual; the step size is single-sample SGD's, not scaled with b. ``rule="mean"`` is the plain
average Σᵢ coefᵢ·Xᵢ / b.

Counts follow the matrix's *values*: duplicate (i, j) entries of a CSR matrix are summed first
(as scipy's arithmetic does), and a stored zero — explicit, or duplicates that cancel — is not
an occurrence.

`aggregate` takes a CSR batch; the solvers' inner loops take the batch's nonzeros straight from
the data's CSR arrays (`gather`) and form sⱼ and cⱼ on the batch support (`support_sums`), in
O(nnz of the batch) and without a length-d array.
"""

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import sys
from typing import Any, Literal, get_args

import numpy as np

from .._validate import check_choice

__all__ = [
    "AGGREGATION_RULES",
    "Rule",
    "aggregate",
    "check_rule",
    "column_counts",
    "gather",
    "require_csr",
    "support_sums",
]

Rule = Literal["adabatch", "mean"]
#: The aggregation rules `aggregate` and the solvers know.
AGGREGATION_RULES: tuple[str, ...] = get_args(Rule)


def check_rule(rule: Any) -> str:
    """``rule`` if it is one of `AGGREGATION_RULES`, else a ValueError listing them."""
    return check_choice(
        "rule",
        rule,
        AGGREGATION_RULES,
        hint="; the aggregation rule: 'adabatch' divides each coordinate of the summed "
        "gradient by the number of batch rows holding it, 'mean' by the batch size",
    )


def require_csr(X: Any, name: str = "X") -> Any:
    """``X`` in canonical CSR form (sorted, duplicates summed; a copy only if needed).

    A 2-d torch tensor in the ``sparse_csr`` layout is accepted too (converted to scipy).

    Raises:
        TypeError: ``X`` is neither a scipy.sparse CSR matrix or array nor a torch CSR tensor.
    """
    import scipy.sparse as sp

    torch = sys.modules.get("torch")  # a torch tensor can only exist if torch is imported
    if torch is not None and isinstance(X, torch.Tensor) and X.layout == torch.sparse_csr:
        if X.dim() != 2:
            raise TypeError(f"{name} must be a 2-d sparse CSR tensor, got {X.dim()} dims")
        from .scipy_bridge import csr_from_torch  # numpy only; no import cycle

        X = csr_from_torch(X)
    if not (sp.issparse(X) and X.format == "csr"):
        got = f"scipy.sparse {X.format!r} matrix" if sp.issparse(X) else type(X).__name__
        raise TypeError(
            f"{name} must be a scipy.sparse CSR matrix (or a torch sparse CSR tensor), got "
            f"{got}; convert it with scipy.sparse.csr_matrix({name}) (or {name}.tocsr())"
        )
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def column_counts(X: Any) -> np.ndarray:
    """cⱼ = #{i : Xᵢⱼ ≠ 0} for each column j of a CSR matrix (int64, length d)."""
    X = require_csr(X)
    occurs = X.indices[X.data != 0]
    return np.bincount(occurs, minlength=X.shape[1]).astype(np.int64, copy=False)


def _check_coef(coef: Any, rows: int) -> np.ndarray:
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim != 1 or coef.shape[0] != rows:
        raise ValueError(
            f"coef must hold one factor per row of X: expected shape ({rows},), got {coef.shape}"
        )
    if not np.all(np.isfinite(coef)):
        bad = int(np.flatnonzero(~np.isfinite(coef))[0])
        raise ValueError(
            f"coef must be finite, got {coef[bad]} at row {bad}; a NaN or infinite loss "
            f"derivative usually means the step size is too large"
        )
    return coef


def aggregate(X: Any, coef: Any, *, rule: Rule = "adabatch") -> np.ndarray:
    """The aggregated gradient direction of a sparse batch (see the module docstring).

    Args:
        X: the b × d batch, a scipy.sparse CSR matrix (b ≥ 1).
        coef: the b per-sample factors φ′ᵢ (sample i's gradient is coefᵢ·Xᵢ).
        rule: ``"adabatch"``: dⱼ = Σᵢ coefᵢ·Xᵢⱼ / cⱼ with cⱼ the number of rows whose entry j
            is non-zero (0 where cⱼ = 0); ``"mean"``: d = Σᵢ coefᵢ·Xᵢ / b.

    Returns:
        d, a float64 array of length d.

    Raises:
        TypeError: ``X`` is not CSR.
        ValueError: an unknown rule, an empty batch, or ``coef`` of the wrong shape or not
            finite.
    """
    rule = check_rule(rule)
    X = require_csr(X)
    b = X.shape[0]
    if b == 0:
        raise ValueError("X is an empty batch (0 rows); a batch needs at least one sample")
    coef = _check_coef(coef, b)
    summed = np.asarray(X.T @ coef, dtype=np.float64).reshape(-1)
    if rule == "mean":
        return summed / b
    counts = column_counts(X)
    out = np.zeros_like(summed)
    seen = counts > 0
    out[seen] = summed[seen] / counts[seen]
    return out


# --------------------------------------------------------------------------------------------
# The same rule on a batch's nonzeros, O(nnz of the batch): the solvers' inner loops.


def gather(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzeros of CSR rows ``rows``: (position of the row in the batch, column, value).

    O(nnz of the batch): the flat positions are each row's slice ``indptr[r]:indptr[r + 1]``,
    built with one ``repeat`` of the per-row offsets instead of a Python loop.
    """
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    batch_starts = np.cumsum(lengths) - lengths  # where each row begins in the output
    pos = np.arange(total, dtype=np.int64) + np.repeat(starts - batch_starts, lengths)
    rowid = np.repeat(np.arange(rows.shape[0], dtype=np.int64), lengths)
    return rowid, indices[pos], data[pos]


def support_sums(
    columns: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(support, s, c)`` of a batch from its nonzeros' ``columns`` and ``weights`` coefᵢ·Xᵢⱼ.

    support: the sorted distinct columns; sⱼ = Σ of the weights in column j, added in the
    given order starting from 0.0 (so row order, as `aggregate`); cⱼ = their number (int64).
    AdaBatch's direction on the support is then s / c, the mean's s / b. ``np.unique`` maps
    each nonzero to its column's slot and ``np.bincount`` adds per slot: no length-d array.
    """
    support, inv = np.unique(columns, return_inverse=True)
    k = support.shape[0]
    return support, np.bincount(inv, weights=weights, minlength=k), np.bincount(inv, minlength=k)
