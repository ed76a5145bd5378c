"""Hogwild!: lock-free asynchronous single-sample SGD on shared weights.

Niu, Recht, Ré, Wright, "Hogwild!: A Lock-Free Approach to Parallelizing Stochastic Gradient
Descent", NeurIPS 2011 (arXiv 1106.5730); the baseline AdaBatch's parallel variant is
compared with (Défossez & Bach, arXiv 1711.01761). W worker processes share one weight
vector w (a ``multiprocessing.RawArray``) and, without any lock or barrier, each repeats

    pick i;  zᵢ = xᵢᵀw  (reads w on supp xᵢ);  wⱼ ← wⱼ − γ·φ′(yᵢ, zᵢ)·xᵢⱼ  for j ∈ supp xᵢ.

Updates of different workers may interleave (a read may see a half-applied update, an
update may be lost); for sparse data collisions are rare, which is the paper's point.
Each epoch is the permutation `adabatch.sparse.sequential.sgd` uses (``default_rng(seed)``), cut
into W contiguous shares (`adabatch.data.sampler.rank_span`); worker r runs its shares of
all epochs one after the other without waiting for the others, so epochs overlap at the
edges. With ``workers=1`` (run in the calling process) and ``l2=0`` the iterates are
``sgd(X, y, batch_size=1)``'s, bitwise.

L2, as in Hogwild!'s sparse SVM: (λ/2)‖w‖² is spread over the samples as
(nλ/2)·Σ_{j∈supp xᵢ} wⱼ²/cⱼ, with cⱼ the number of training rows holding column j, so the
mean over i is (λ/2)‖w‖² again (on the columns some row holds) and a sample only touches its
own support: no dense decay, which an asynchronous worker could not apply consistently. We
take its proximal (implicit) step, wⱼ ← (wⱼ − γφ′xᵢⱼ) / (1 + γnλ/cⱼ): to first order the
gradient step, and stable for any γ even on rare columns, where γnλ/cⱼ can exceed 1.
Columns no row holds are never updated (they keep w0; the minimiser has them at 0).

Trace (W ≥ 2): the parent process does no SGD. Workers add to per-worker shared counters
every 256 samples; the parent polls them every few milliseconds and, each time the total
passes a multiple of ``record_every``, snapshots w (a copy, taken while the workers keep
running, so it may hold half-applied updates, as any Hogwild! read) with the counter total
and the time since the start. The snapshots are evaluated after the workers finish, so the
evaluation takes no CPU from them; they cost ``records × d × 8`` bytes until then. Recorded
sample counts are therefore at or a little past the multiples of ``record_every``. The
final point is the last worker's finish time. With ``workers=1`` recording is exact and its
time excluded, as in `sgd`.

Speed: a sample costs about 7 µs of Python and numpy, and workers never wait for each other,
so on synthetic_sparse(100 000, 100 000, nnz_per_sample=30) one epoch takes 0.68 s with one
worker and 0.36 s with two on an otherwise idle 2-vCPU VM (1.9×), with the same final loss up
to the noise of the asynchrony.
"""

# X, X_test: the matrix names of the maths.

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import math
import time
from typing import Any

import numpy as np

from ..data.order import rank_span
from ._problem import Problem, prepare_team_run
from ._process_team import AbortedError, Link, Solo, Team, as_array
from .losses import Loss, objective
from .sequential import epoch_orders
from .trace import Recorder, SolverResult, error_rate

__all__ = ["hogwild"]

#: Samples between two checks of the stop flag and two updates of the shared counter.
_CHUNK = 256
#: The parent's polling period for the counters (seconds).
_POLL_S = 0.002


def _run(
    w: np.ndarray,
    pb: Problem,
    samples: np.ndarray,
    shrink: np.ndarray | None,
    counter: np.ndarray,
    rank: int,
    link: Link | Solo,
) -> None:
    """Single-sample SGD over ``samples``, in place on ``w`` (shared in a team)."""
    indptr, indices, data, y = pb.indptr, pb.indices, pb.data, pb.y
    deriv, gamma = pb.loss.derivative, pb.step_size
    for c0 in range(0, samples.shape[0], _CHUNK):
        if link.stopped():
            raise AbortedError
        chunk = samples[c0 : c0 + _CHUNK]
        for i in chunk.tolist():
            lo, hi = indptr[i], indptr[i + 1]
            cols, vals = indices[lo:hi], data[lo:hi]
            z = float(np.dot(vals, w[cols]))  # a racy read of w on the support: Hogwild!
            if not math.isfinite(z):
                raise pb.diverged()
            # `sgd`'s single-sample operations, so that one worker reproduces it bitwise.
            coef = float(deriv(y[i : i + 1], np.array([z]))[0])
            if shrink is None:
                w[cols] -= (gamma * coef) * vals
            else:
                w[cols] = (w[cols] - (gamma * coef) * vals) * shrink[cols]
        counter[rank] += chunk.shape[0]


def _hogwild_child(
    rank: int,
    link: Link,
    pb: Problem,
    orders: list[np.ndarray],
    shrink: np.ndarray | None,
    bufs: tuple[Any, Any, Any],
) -> None:
    w_raw, counters_raw, finish = bufs
    w, counters = as_array(w_raw, np.float64), as_array(counters_raw, np.int64)
    link.wait()  # everyone attached: the parent starts the clock
    _run(w, pb, orders[rank], shrink, counters, rank, link)
    finish[rank] = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes


def hogwild(
    X: Any,
    y: Any,
    *,
    workers: int = 2,
    loss: str | Loss = "logistic",
    step_size: float,
    l2: float = 0.0,
    epochs: float = 1.0,
    seed: int = 0,
    record_every: int | None = None,
    X_test: Any = None,
    y_test: Any = None,
    w0: Any = None,
    start_method: str | None = None,
) -> SolverResult:
    """Hogwild! single-sample SGD with ``workers`` lock-free processes (module docstring).

    Args:
        X: n × d training rows, scipy.sparse CSR (stored zeros ignored).
        y: n targets (0/1 or −1/+1 for ``logistic``; real for ``squared``).
        workers: W ≥ 1 worker processes (W = 1 runs here; W ≥ 2 are children, the parent
            only records).
        loss: ``"logistic"``, ``"squared"`` or a `Loss`.
        step_size: γ > 0.
        l2: λ ≥ 0, spread over the samples' supports (module docstring).
        epochs: passes over the data (> 0, may be fractional: round(epochs·n) samples).
        seed: seed of the epoch permutations.
        record_every: record f(w) about every this many samples (default n, once per epoch);
            start and end always.
        X_test: optional test rows (CSR) for the trace's test error.
        y_test: their labels.
        w0: starting weights (default 0).
        start_method: ``"fork"`` (default where available), ``"spawn"`` or ``"forkserver"``.

    Returns:
        `SolverResult`: final w and the `Trace` (for W ≥ 2 sampled while the workers run).

    Raises:
        TypeError: X (or X_test) is not CSR; workers or seed not an integer.
        ValueError: bad arguments; the message says which value and how to fix it.
        DivergenceError: w or the loss became NaN/infinite (W = 1, or in a recorded point).
        WorkerError: a worker raised (``__cause__`` is its exception) or died; all
            processes are stopped and reaped before it propagates.
    """
    run = prepare_team_run(
        X, y, solver="Hogwild!", workers=workers, loss=loss, step_size=step_size, l2=l2,
        epochs=epochs, seed=seed, record_every=record_every, X_test=X_test, y_test=y_test,
        w0=w0, start_method=start_method,
    )  # fmt: skip
    pb, W, v0, rec = run.pb, run.workers, run.w0, run.rec
    n, d = pb.X.shape
    shrink = None
    if pb.l2:
        c = np.bincount(pb.indices, minlength=d)
        scale = pb.step_size * n * pb.l2
        shrink = 1.0 / (1.0 + scale / np.maximum(c, 1))  # c = 0: never touched
    orders: list[list[np.ndarray]] = [[] for _ in range(W)]
    for order in epoch_orders(n, run.seed, pb.total):
        for r in range(W):
            r0, r1 = rank_span(order.shape[0], W, r)
            orders[r].append(order[r0:r1])
    mine = [np.concatenate(parts) for parts in orders]
    if W == 1:
        return _solo(pb, mine[0], shrink, v0, rec)
    every = rec.every
    team = Team("hogwild", start_method)
    try:
        raw = team.ctx.RawArray
        bufs = (raw("d", d), raw("q", W), raw("d", W))
        w, counters, finish = as_array(bufs[0], np.float64), as_array(bufs[1], np.int64), bufs[2]
        w[:] = v0
        team.start(_hogwild_child, range(W), (pb, mine, shrink, bufs))
        team.wait()
        t0 = time.perf_counter()
        snaps = [(0, 0.0, v0.copy())]
        due, finished = every, 0
        while finished < W:
            finished += len(team.poll(_POLL_S))
            seen = int(counters.sum())
            # Not at the total: counters can reach it before the last worker reports its end,
            # and the final point below is recorded once, with the finishing time.
            if finished < W and due <= seen < pb.total:
                snaps.append((seen, time.perf_counter() - t0, w.copy()))
                due = (seen // every + 1) * every
        snaps.append((int(counters.sum()), max(finish) - t0, w.copy()))
    finally:
        team.close()
    trace = rec.trace
    for samples, elapsed, wv in snaps:
        trace.samples.append(samples)
        trace.time.append(elapsed)
        trace.loss.append(objective(pb.X, pb.y, wv, pb.loss, pb.l2))
        trace.test_error.append(
            None if rec.X_test is None else error_rate(rec.X_test, rec.y_test, wv, pb.loss)
        )
        pb.check_trace(rec)
    w_final = snaps[-1][2]
    if not np.all(np.isfinite(w_final)):
        raise pb.diverged("at the end")
    return SolverResult(w_final, trace)


def _solo(
    pb: Problem, samples: np.ndarray, shrink: np.ndarray | None, v0: np.ndarray, rec: Recorder
) -> SolverResult:
    """One worker, in this process: exact record points, evaluation time excluded."""
    w, counter, every = v0, np.zeros(1, np.int64), rec.every
    rec.start()
    rec.record(0, w)
    pos = 0
    while pos < pb.total:
        end = min(pb.total, (pos // every + 1) * every)
        _run(w, pb, samples[pos:end], shrink, counter, 0, Solo())
        pos = end
        if not np.all(np.isfinite(w)):
            raise pb.diverged(f"at sample {pos}")
        if pos < pb.total:  # the end is recorded by `finish`
            rec.record(pos, w)
            pb.check_trace(rec)
    return pb.finish(rec, pb.total, w.copy(), f"at sample {pb.total}")
