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
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import numpy as np

__all__ = ["RULES", "Rule", "aggregate", "column_counts", "require_csr"]

Rule = Literal["adabatch", "mean"]
#: The aggregation rules `aggregate` knows.
RULES: tuple[str, ...] = ("adabatch", "mean")


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
        from .data import csr_from_torch  # data.py needs numpy only; no import cycle

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
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; valid rules: {', '.join(RULES)}")
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
