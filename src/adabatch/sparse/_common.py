"""What the sparse solvers share: input checks, the CSR preparation, the recorder, divergence.

`adabatch.sparse.sequential`, `parallel`, `variance_reduction` and `lockfree` validate their
arguments, prepare X and report divergence the same way; these helpers keep them identical.
"""

# X: the matrix name of the maths (and of scikit-learn).

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .aggregate import RULES, require_csr
from .losses import Loss, signed_labels
from .trace import Recorder

__all__ = ["DivergenceError"]

#: The scale a of w = a·v is folded back into v (an O(d) pass) once it falls below this; it
#: only shrinks by (1 − γλ) per step, so this happens every ≈ 18/(γλ) steps: amortised O(1).
#: Keeping a ≥ 1e-8 keeps |v| = |w|/a within 8 orders of magnitude of |w|, far from overflow
#: and with no loss of relative precision (float64 scaling is exact up to rounding).
_RENORM_BELOW = 1e-8


class DivergenceError(FloatingPointError):
    """A solver's iterate or loss became NaN or infinite (the step size is too large)."""


# --------------------------------------------------------------------------------------------
# Shared helpers (also used by `adabatch.sparse.variance_reduction`).


def _prepare_csr(X: Any, name: str = "X") -> Any:
    """``X`` as canonical float64 CSR without stored zeros (copied when anything changes).

    Stored zeros are dropped so that "row i holds column j" (the AdaBatch count) is simply
    "j is among row i's stored indices", as `column_counts` defines it.
    """
    X = require_csr(X, name)
    if X.dtype != np.float64:
        X = X.astype(np.float64)  # a copy
    elif np.any(X.data == 0):
        X = X.copy()
    if np.any(X.data == 0):
        X.eliminate_zeros()  # in place: X is our own copy here
    return X


def _check_labels(y: Any, n: int, loss: Loss, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must hold one label per row of X: X has {n} rows but {name} has shape "
            f"{arr.shape}; pass the targets of the same samples, as a 1-d array"
        )
    return signed_labels(arr, loss)


def _check_positive_int(name: str, value: Any, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}; {hint}")
    return int(value)


def _check_positive_float(name: str, value: Any, hint: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; {hint}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; {hint}")
    return v


def _check_l2(l2: Any) -> float:
    try:
        v = float(l2)
    except (TypeError, ValueError):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(
            f"l2 must be a finite number >= 0, got {l2!r}; it is the weight λ of (λ/2)‖w‖², "
            "use 0 for no regularisation"
        )
    return v


def _check_rule(rule: Any) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; valid rules: {', '.join(RULES)}")
    return str(rule)


def _check_w0(w0: Any, d: int) -> np.ndarray:
    if w0 is None:
        return np.zeros(d, dtype=np.float64)
    w = np.array(w0, dtype=np.float64, copy=True).reshape(-1)
    if w.shape[0] != d or np.ndim(w0) != 1:
        raise ValueError(
            f"w0 must be a vector of length d = {d} (one weight per column of X), got shape "
            f"{np.shape(w0)}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError("w0 must be finite; it holds NaN or infinite weights")
    return w


def _make_recorder(
    X: Any,
    y: np.ndarray,
    loss: Loss,
    l2: float,
    every: int | None,
    default_every: int,
    X_test: Any,
    y_test: Any,
) -> Recorder:
    if (X_test is None) != (y_test is None):
        raise ValueError("pass X_test and y_test together (or neither)")
    if every is None:
        every = default_every
    every = _check_positive_int("record_every", every, "it is a number of samples")
    if X_test is not None:
        X_test = require_csr(X_test, "X_test")
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(
                f"X_test has {X_test.shape[1]} columns but X has {X.shape[1]}; the test set "
                "must use the training set's features"
            )
        if np.asarray(y_test).reshape(-1).shape[0] != X_test.shape[0]:
            raise ValueError(
                f"y_test has {np.asarray(y_test).size} labels but X_test has {X_test.shape[0]} rows"
            )
    return Recorder(X, y, loss, l2, every=every, X_test=X_test, y_test=y_test)


def _gather(
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


def _diverged(where: str, step_size: float, loss: Loss, max_row_norm2: float) -> DivergenceError:
    safe = 1.0 / (loss.smoothness * max_row_norm2) if max_row_norm2 > 0 else float("inf")
    return DivergenceError(
        f"{where}: diverged (the weights or the loss became NaN or infinite) with "
        f"step_size={step_size:g}; lower the step size (for the {loss.name} loss a safe "
        f"single-sample step is about 1/(L·max‖xᵢ‖²) = {safe:.3g})"
    )


def _max_row_norm2(X: Any) -> float:
    if X.nnz == 0:
        return 0.0
    sq = np.bincount(
        np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), weights=X.data**2, minlength=0
    )
    return float(sq.max())


def _check_trace(rec: Recorder, solver: str, gamma: float, loss: Loss, max_norm2: float) -> None:
    last = rec.trace.loss[-1]
    if not math.isfinite(last):
        raise _diverged(f"{solver} at sample {rec.trace.samples[-1]}", gamma, loss, max_norm2)
