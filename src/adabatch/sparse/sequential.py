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

# X, X_test: the matrix names of the maths (and of scikit-learn).

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._validate import as_int
from ..errors import DivergenceError
from ._problem import Problem, check_w0, make_recorder, prepare_problem
from .aggregate import check_rule, gather, support_sums
from .losses import Loss
from .trace import SolverResult

__all__ = ["DivergenceError", "epoch_orders", "sgd"]

#: The scale a of w = a·v is folded back into v (an O(d) pass) once it falls below this; it
#: only shrinks by (1 − γλ) per step, so this happens every ≈ 18/(γλ) steps: amortised O(1).
#: Keeping a ≥ 1e-8 keeps |v| = |w|/a within 8 orders of magnitude of |w|, far from overflow
#: and with no loss of relative precision (float64 scaling is exact up to rounding).
_RENORM_BELOW = 1e-8


def epoch_orders(n: int, seed: Any, total: int) -> Iterator[np.ndarray]:
    """`sgd`'s sample order: the e-th ``default_rng(seed).permutation(n)``, cut at ``total``.

    Every epoch but the last is a whole permutation; the last holds the first
    ``total − e·n`` rows of its permutation, so ``total`` samples are visited in all.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, total, n):
        yield rng.permutation(n)[: min(n, total - start)]


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
        TypeError: ``X`` (or ``X_test``) is not CSR; ``batch_size`` or ``record_every`` not an
            integer, ``step_size``, ``l2`` or ``epochs`` not a number.
        ValueError: bad arguments (message says which and how to fix it).
        DivergenceError: w or the loss became NaN/infinite; lower ``step_size``.
    """
    pb = prepare_problem(X, y, solver="SGD", loss=loss, step_size=step_size, l2=l2, epochs=epochs)
    n, d = pb.X.shape
    rule = check_rule(rule)
    b = as_int(batch_size, "batch_size", 1, hint="; use 1 for plain SGD")
    gamma, l2 = pb.step_size, pb.l2
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
    v = check_w0(w0, d)
    rec = make_recorder(pb, record_every, n, X_test, y_test)
    a = 1.0  # w = a·v
    every = rec.every
    processed = 0

    def current() -> np.ndarray:
        return v if a == 1.0 else a * v

    rec.start()
    rec.record(0, current())
    next_record = every
    for order in epoch_orders(n, seed, pb.total):
        for start in range(0, order.shape[0], b):
            rows = order[start : start + b]
            m = rows.shape[0]
            step = gamma * m if scale_step else gamma
            a_next = a * (1.0 - step * l2) if l2 else a
            if m == 1:
                # Plain SGD: a single canonical row has distinct columns, so no aggregation is
                # needed (both rules give d = φ′ᵢ·xᵢ); this avoids the gather/unique overhead.
                _row_step(pb, v, a, a_next, int(rows[0]), step, processed)
            else:
                support, s, c = _batch_sums(pb, v, a, rows, processed)
                direction = s / c if rule == "adabatch" else s / m
                v[support] -= (step / a_next) * direction
            a = a_next
            if a < _RENORM_BELOW:
                v *= a
                a = 1.0
            processed += m
            if processed >= next_record:
                w_now = current()
                if not np.all(np.isfinite(w_now)):
                    raise pb.diverged(f"at sample {processed}")
                rec.record(processed, w_now)
                pb.check_trace(rec)
                next_record = (processed // every + 1) * every
    return pb.finish(rec, processed, a * v, "at the end")


def _row_step(
    pb: Problem, v: np.ndarray, a: float, a_next: float, row: int, step: float, at: int
) -> None:
    """One plain-SGD step on the single row ``row`` at w = a·v, in place on v.

    With zᵢ = xᵢᵀw and the step γ (``step``), w ← (1 − γλ)·w − γ·φ′(yᵢ, zᵢ)·xᵢ, written as
    v_S ← v_S − (γ·φ′/a_next)·x_S on the row's support S, the decay being the scale
    a_next = a·(1 − γλ) (the caller's). ``at`` (samples before the step) is for the
    divergence message.
    """
    lo, hi = pb.indptr[row], pb.indptr[row + 1]
    cols, vals = pb.indices[lo:hi], pb.data[lo:hi]
    z = a * float(np.dot(vals, v[cols]))
    if not math.isfinite(z):
        raise pb.diverged(f"at sample {at}")
    coef = float(pb.loss.derivative(pb.y[row : row + 1], np.array([z]))[0])
    v[cols] -= (step * coef / a_next) * vals


def _batch_sums(
    pb: Problem, v: np.ndarray, a: float, rows: np.ndarray, at: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(support, s, c)`` of the batch ``rows`` at w = a·v, in O(nnz of the batch).

    zᵢ = xᵢᵀw and φ′ᵢ = φ′(yᵢ, zᵢ) for each row, then `support_sums`: sⱼ = Σᵢ φ′ᵢxᵢⱼ and
    cⱼ = #{i : xᵢⱼ ≠ 0} on the batch support. ``at`` is for the divergence message.
    """
    rowid, cols, vals = gather(pb.indptr, pb.indices, pb.data, rows)
    z = a * np.bincount(rowid, weights=vals * v[cols], minlength=rows.shape[0])
    if not np.all(np.isfinite(z)):
        raise pb.diverged(f"at sample {at}")
    coef = pb.loss.derivative(pb.y[rows], z)
    return support_sums(cols, coef[rowid] * vals)
