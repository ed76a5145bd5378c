"""Mini-batch SGD for sparse linear models with AdaBatch aggregation (Défossez & Bach).

The model is f(w) = (1/n) Σᵢ φ(yᵢ, xᵢᵀw) + (λ/2)‖w‖² (`adabatch.sparse.losses`). One step on
a batch B of b rows, with sample i's data gradient φ′ᵢ·xᵢ:

    sⱼ = Σ_{i∈B} φ′ᵢ·xᵢⱼ,   cⱼ = #{i ∈ B : xᵢⱼ ≠ 0},
    ``adabatch``: dⱼ = sⱼ / cⱼ (0 where cⱼ = 0), step γ          (arXiv 1711.01761)
    ``mean``:     d  = s / b,  step γ (or γ·b with ``scale_step``)
    w ← w − γ·(d + λw).

AdaBatch keeps the single-sample step γ whatever b: a coordinate seen by one row of the batch
moves as in plain SGD, a dense coordinate is averaged. The L2 term is dense and identical for
all samples, so it is applied as its own decay and never divided by counts.

Cost: a step touches only the batch's nonzeros. The batch rows are sliced out of the CSR
arrays, the gradient is aggregated on the batch support (``np.unique`` + ``np.bincount``), and
the dense L2 decay is folded into a scalar (w = a·v, see `sgd`), so no length-d array is built
per step: with d ~ 10⁶ and 10⁵ steps, an O(d) step would dominate everything.
"""

# X, X_test, X_batch, scale_D: the matrix names of the maths (and of scikit-learn).

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._common import (
    _RENORM_BELOW,
    DivergenceError,
    _check_l2,
    _check_labels,
    _check_positive_float,
    _check_positive_int,
    _check_rule,
    _check_trace,
    _check_w0,
    _diverged,
    _gather,
    _make_recorder,
    _max_row_norm2,
    _prepare_csr,
)
from .losses import Loss, get_loss
from .trace import SolverResult

__all__ = ["DivergenceError", "sgd"]


# --------------------------------------------------------------------------------------------


def sgd(
    X: Any,
    y: Any,
    *,
    loss: str | Loss = "logistic",
    batch_size: int = 1,
    rule: str = "adabatch",
    step_size: float,
    l2: float = 0.0,
    epochs: float = 1.0,
    seed: int = 0,
    scale_step: bool = False,
    record_every: int | None = None,
    X_test: Any = None,
    y_test: Any = None,
    w0: Any = None,
) -> SolverResult:
    """Mini-batch SGD with AdaBatch (or mean) aggregation on a sparse linear model.

    Each step takes the next b rows B of the epoch's shuffled order and does

        w ← w − γ·(d + λw),
        ``adabatch``: dⱼ = Σ_{i∈B} φ′ᵢxᵢⱼ / cⱼ,   ``mean``: d = Σ_{i∈B} φ′ᵢxᵢ / |B|

    with cⱼ = #{i ∈ B : xᵢⱼ ≠ 0} (dⱼ = 0 where cⱼ = 0) — Défossez & Bach, "AdaBatch: Efficient
    Gradient Aggregation Rules for Sequential and Parallel Stochastic Gradient Methods",
    arXiv 1711.01761. AdaBatch uses the single-sample step γ for every b; ``mean`` uses γ, or
    γ·|B| with ``scale_step`` (the linear scaling rule, averaging's best case: the step then
    equals γ times the summed gradient). With b = 1 both rules are plain SGD.

    Order: epoch e visits the rows in the order of the e-th ``rng.permutation(n)`` of
    ``rng = np.random.default_rng(seed)``, cut into consecutive batches of b; the last batch
    of an epoch holds the n mod b leftover rows (it is kept, not dropped), so every sample is
    used exactly once per epoch. A fractional ``epochs`` stops the last epoch after
    round(epochs·n) samples in all.

    L2 in O(nnz) per step (the scale trick): w is stored as a·v with a scalar a. The decay
    w ← (1 − γλ)w is then ``a ← a(1 − γλ)``, and the sparse part of the step is
    ``v_S ← v_S − γ·d_S / a`` on the batch support S only, so a·v is exactly
    (1 − γλ)w − γd. Once a < 1e-8, v is multiplied by a and a reset to 1 (O(d), every
    ≈ 18/(γλ) steps). Note that with λ > 0 AdaBatch's implicit preconditioner acts on the
    data term only, so the constant-step iterates hover around the zero of P∇f_data + λw
    (P diagonal), which is not argmin f exactly; ``mean`` has P = I.

    Args:
        X: the n × d training rows, a scipy.sparse CSR matrix (float32/float64; stored zeros
            are ignored, as in `column_counts`).
        y: n targets (0/1 or −1/+1 for ``logistic``; real for ``squared``).
        loss: ``"logistic"`` or ``"squared"`` (or a `Loss`).
        batch_size: b ≥ 1 (a b above n makes one full batch per epoch).
        rule: ``"adabatch"`` or ``"mean"``.
        step_size: γ > 0, the single-sample step.
        l2: λ ≥ 0; γ·λ (γ·b·λ with ``scale_step``) must be < 1.
        epochs: passes over the data (> 0, may be fractional).
        seed: seed of the shuffles.
        scale_step: ``rule="mean"`` only: step γ·|B| instead of γ.
        record_every: record f(w) (and the test error) every this many samples; default n
            (once per epoch). The start and the end are always recorded.
        X_test: optional test rows (CSR) for the trace's test error.
        y_test: their labels.
        w0: starting weights (default 0).

    Returns:
        `SolverResult` with the final w (float64, length d) and the `Trace`.

    Raises:
        TypeError: ``X`` (or ``X_test``) is not CSR.
        ValueError: bad arguments (message says which and how to fix it).
        DivergenceError: w or the loss became NaN/infinite; lower ``step_size``.
    """
    X = _prepare_csr(X)
    n, d = X.shape
    lossf = get_loss(loss)
    rule = _check_rule(rule)
    if n == 0:
        raise ValueError("X has no rows; SGD needs at least one sample")
    y = _check_labels(y, n, lossf)
    b = _check_positive_int("batch_size", batch_size, "use 1 for plain SGD")
    gamma = _check_positive_float(
        "step_size", step_size, "pass the single-sample SGD step γ, e.g. 1/(L·max‖xᵢ‖²)"
    )
    l2 = _check_l2(l2)
    epochs = _check_positive_float("epochs", epochs, "pass the number of passes over the data")
    if scale_step and rule != "mean":
        raise ValueError(
            f"scale_step=True applies to rule='mean' only (step γ·b); rule={rule!r} always uses "
            "the single-sample step γ, so pass scale_step=False"
        )
    b = min(b, n)
    top_step = gamma * b if scale_step else gamma
    if l2 * top_step >= 1:
        raise ValueError(
            f"step_size·l2 must be < 1 (the L2 decay factor 1 − γλ must stay positive), got "
            f"γ={top_step:g} (step_size={gamma:g}{', ×b' if scale_step else ''}) and l2={l2:g}; "
            "lower the step size or l2"
        )
    v = _check_w0(w0, d)
    rec = _make_recorder(X, y, lossf, l2, record_every, n, X_test, y_test)
    max_norm2 = _max_row_norm2(X)
    indptr = X.indptr.astype(np.int64, copy=False)
    indices, data = X.indices, X.data
    deriv = lossf.derivative
    rng = np.random.default_rng(seed)
    total = max(1, round(epochs * n))
    a = 1.0  # w = a·v
    every = rec.every
    processed = 0
    next_record = 0

    def current() -> np.ndarray:
        return v if a == 1.0 else a * v

    rec.start()
    rec.record(0, current())
    next_record = every
    while processed < total:
        order = rng.permutation(n)
        stop_epoch = min(n, total - processed)
        for start in range(0, stop_epoch, b):
            rows = order[start : min(start + b, stop_epoch)]
            m = rows.shape[0]
            step = gamma * m if scale_step else gamma
            if m == 1:
                # Plain SGD: a single canonical row has distinct columns, so no aggregation is
                # needed (both rules give d = φ′ᵢ·xᵢ); this avoids the gather/unique overhead.
                r = int(rows[0])
                lo, hi = indptr[r], indptr[r + 1]
                cols = indices[lo:hi]
                vals = data[lo:hi]
                z = a * float(np.dot(vals, v[cols]))
                if not math.isfinite(z):
                    raise _diverged(f"SGD at sample {processed}", gamma, lossf, max_norm2)
                coef = float(deriv(y[r : r + 1], np.array([z]))[0])
                if l2:
                    a *= 1.0 - step * l2
                v[cols] -= (step * coef / a) * vals
            else:
                rowid, cols, vals = _gather(indptr, indices, data, rows)
                z = a * np.bincount(rowid, weights=vals * v[cols], minlength=m)
                if not np.all(np.isfinite(z)):
                    raise _diverged(f"SGD at sample {processed}", gamma, lossf, max_norm2)
                coef = deriv(y[rows], z)
                # Aggregate on the batch support only: `inv` maps each nonzero to its column's
                # slot in `support`, so bincount gives sⱼ (weighted) and cⱼ (unweighted).
                support, inv = np.unique(cols, return_inverse=True)
                s = np.bincount(inv, weights=coef[rowid] * vals, minlength=support.shape[0])
                if rule == "adabatch":
                    direction = s / np.bincount(inv, minlength=support.shape[0])
                else:
                    direction = s / m
                if l2:
                    a *= 1.0 - step * l2
                v[support] -= (step / a) * direction
            if a < _RENORM_BELOW:
                v *= a
                a = 1.0
            processed += m
            if processed >= next_record:
                w_now = current()
                if not np.all(np.isfinite(w_now)):
                    raise _diverged(f"SGD at sample {processed}", gamma, lossf, max_norm2)
                rec.record(processed, w_now)
                _check_trace(rec, "SGD", gamma, lossf, max_norm2)
                next_record = (processed // every + 1) * every
    w = a * v
    if not np.all(np.isfinite(w)):
        raise _diverged("SGD at the end", gamma, lossf, max_norm2)
    result = rec.finish(processed, w)
    _check_trace(rec, "SGD", gamma, lossf, max_norm2)
    return result
