"""Synchronous data-parallel AdaBatch on worker processes that share the weights.

Défossez & Bach, "AdaBatch: Efficient Gradient Aggregation Rules for Sequential and Parallel
Stochastic Gradient Methods", arXiv 1711.01761 (the parallel variant; its details are
unverified, see ``docs/methods.md`` §2.3). Step k takes the batch B of the sequential solver
`adabatch.sparse.sequential.sgd` (same seed, same order) and splits it into W contiguous shares
B⁽ʳ⁾ (`adabatch.data.sampler.rank_span`: the first |B| mod W workers get one row more):

    worker r:  zᵢ = xᵢᵀw,  φ′ᵢ = φ′(yᵢ, zᵢ)                            (i ∈ B⁽ʳ⁾)
               sⱼ⁽ʳ⁾ = Σ_{i∈B⁽ʳ⁾} φ′ᵢxᵢⱼ,   cⱼ⁽ʳ⁾ = #{i ∈ B⁽ʳ⁾ : xᵢⱼ ≠ 0}   (j ∈ supp B⁽ʳ⁾)
    combine:   dⱼ = Σᵣ sⱼ⁽ʳ⁾ / Σᵣ cⱼ⁽ʳ⁾   (``rule="mean"``: Σᵣ sⱼ⁽ʳ⁾ / |B|)
    update:    w ← (1 − γλ)·w − γ·d

The partials and their combination are `adabatch.sparse.partials` (an example, and why d is
the sequential value up to the rounding of adding the partials, ≈ 1e-16 relative). With
``workers=1`` the solver repeats `sgd`'s floating-point operations and gives its weights
bitwise.

Shared memory and cost. The weights live in one shared array (the scale trick w = a·v of
`sgd`: a is a scalar every worker updates identically, so the dense L2 decay costs O(1)).
Each worker writes its partial (sorted support, sums, counts) into its own slot of a shared
per-step buffer; after a barrier, worker r combines the partials restricted to the columns it
owns (a fixed range [lo_r, hi_r), balanced on the expected batch support) and updates v on
them; a second barrier publishes w. A step is O(nnz(B) log nnz(B)) work, never O(d). The
parent process is worker 0 (and records the trace between steps); workers 1…W−1 are child
processes of a `adabatch.sparse._process_team.Team`: a worker that raises or dies is noticed
at the next barrier and its error is re-raised in the parent as `WorkerError`, and nothing
outlives the processes.

When more workers help. A barrier is a pipe round trip, about 75 µs on a 2-vCPU VM, and a
step has two, while the work a step splits is about 20 numpy calls plus O(nnz(B)). Measured
on synthetic_sparse(100 000, 100 000, nnz_per_sample=30), one epoch, 2 vCPUs: b = 128 takes
0.14 s with one worker and 0.30 s with two (the barriers cost more than the halved work);
b = 2048: 0.12 s vs 0.10 s; b = 8192: 0.12 s vs 0.08 s. So W > 1 pays from roughly
b·nnz-per-row ≈ 50 000 nonzeros per step; below that use ``workers=1`` (or `sgd`).
"""

# X, X_test: the matrix names of the maths.

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._validate import as_int
from ..data.order import rank_span
from ..errors import WorkerError
from ._problem import Problem, prepare_team_run
from ._process_team import Link, Solo, Team, as_array
from .aggregate import check_rule
from .losses import Loss
from .partials import Partial, combine, combine_partials, share_partial
from .sequential import _RENORM_BELOW, _batch_sums, _row_step, epoch_orders
from .trace import Recorder, SolverResult

__all__ = ["Partial", "WorkerError", "combine_partials", "parallel_adabatch", "share_partial"]


@dataclasses.dataclass(frozen=True)
class _Job:
    problem: Problem
    order: np.ndarray  # the concatenated epoch orders, length total
    batch_size: int
    rule: str
    workers: int
    capacity: int  # max entries of one partial
    bounds: np.ndarray  # worker r owns columns [bounds[r], bounds[r + 1])


@dataclasses.dataclass(frozen=True)
class _Buffers:
    """Shared arrays (RawArray in a team, numpy arrays for one worker)."""

    v: Any  # w = a·v, length d
    columns: Any  # W × capacity partial supports
    sums: Any  # W × capacity
    counts: Any  # W × capacity
    lengths: Any  # W, entries used in each partial


def _batch_spans(n: int, b: int, total: int) -> Iterator[tuple[int, int]]:
    """Positions [start, end) of each batch in the concatenated order (`sgd`'s batches)."""
    for epoch_start in range(0, total, n):
        stop = epoch_start + min(n, total - epoch_start)
        for start in range(epoch_start, stop, b):
            yield start, min(start + b, stop)


def _owner_bounds(indices: np.ndarray, n: int, d: int, share: int, workers: int) -> np.ndarray:
    """Column ranges that split a share's expected support evenly between the workers.

    Column j with frequency pⱼ appears in a share of m rows with probability 1 − (1 − pⱼ)^m,
    which is the expected number of partial entries it contributes: balancing that, not the
    nnz, keeps the Zipf head (few columns, most nonzeros) from landing on one worker's range.
    """
    p = np.bincount(indices, minlength=d) / n
    with np.errstate(divide="ignore"):
        weight = -np.expm1(share * np.log1p(-p))  # 1 − (1 − p)^m, exact for small p
    cum = np.cumsum(weight)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, workers) / workers, side="left") + 1
    bounds = np.concatenate([[0], np.minimum(cuts, d), [d]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


def _fill_partial(
    job: _Job, v: np.ndarray, a: float, rows: np.ndarray, start: int, slot: tuple
) -> int:
    """Phase 1 of worker r: write the `Partial` of ``rows`` into ``slot``; its length."""
    if rows.shape[0] == 0:
        return 0
    # `sgd`'s exact operations, so that one worker reproduces it bitwise.
    support, sums, counts = _batch_sums(job.problem, v, a, rows, start)
    k = support.shape[0]
    out_cols, out_sums, out_counts = slot
    out_cols[:k] = support
    out_sums[:k] = sums
    out_counts[:k] = counts
    return k


def _adabatch_rank(
    rank: int,
    barrier: Link | Solo | Team,
    job: _Job,
    bufs: _Buffers,
    on_step: Callable[[int, np.ndarray, float], None] | None = None,
) -> None:
    """The step loop of worker ``rank`` (the parent runs rank 0 with ``on_step`` recording)."""
    pb, W, cap = job.problem, job.workers, job.capacity
    v = as_array(bufs.v, np.float64)
    part_cols = as_array(bufs.columns, np.int64).reshape(W, cap)
    part_sums = as_array(bufs.sums, np.float64).reshape(W, cap)
    part_counts = as_array(bufs.counts, np.int64).reshape(W, cap)
    lengths = as_array(bufs.lengths, np.int64)
    lo, hi = int(job.bounds[rank]), int(job.bounds[rank + 1])
    slot = (part_cols[rank], part_sums[rank], part_counts[rank])
    gamma, l2 = pb.step_size, pb.l2
    a = 1.0  # w = a·v, the same number in every worker (same operations)
    barrier.wait()  # everyone attached: start the clock
    if on_step is not None:
        on_step(0, v, a)
    for start, end in _batch_spans(pb.X.shape[0], job.batch_size, pb.total):
        size = end - start
        r0, r1 = rank_span(size, W, rank)
        rows = job.order[start + r0 : start + r1]
        a_next = a * (1.0 - gamma * l2) if l2 else a
        # Phase 1: partials (reads v only). A batch of one row is `sgd`'s plain-SGD update,
        # done by the worker holding the row.
        if size == 1:
            if rows.shape[0]:
                _row_step(pb, v, a, a_next, int(rows[0]), gamma, start)
            lengths[rank] = 0
        else:
            lengths[rank] = _fill_partial(job, v, a, rows, start, slot)
        barrier.wait()
        # Phase 2: combine the partials on my columns and update them (writes v[lo:hi] only).
        if size > 1:
            cols, sums, counts = [], [], []
            for q in range(W):
                k = int(lengths[q])
                i0, i1 = np.searchsorted(part_cols[q, :k], (lo, hi))
                if i1 > i0:
                    cols.append(part_cols[q, i0:i1])
                    sums.append(part_sums[q, i0:i1])
                    counts.append(part_counts[q, i0:i1])
            if cols:
                support, direction = combine(cols, sums, counts, size, job.rule)
                v[support] -= (gamma / a_next) * direction
        a = a_next
        if a < _RENORM_BELOW:  # every worker decides alike and folds its own range
            v[lo:hi] *= a
            a = 1.0
        barrier.wait()  # v complete for the next step
        if on_step is not None:
            on_step(end, v, a)


def _adabatch_child(rank: int, link: Link, job: _Job, bufs: _Buffers) -> None:
    _adabatch_rank(rank, link, job, bufs)


def parallel_adabatch(
    X: Any,
    y: Any,
    *,
    workers: int = 2,
    loss: str | Loss = "logistic",
    batch_size: int,
    step_size: float,
    l2: float = 0.0,
    epochs: float = 1.0,
    seed: int = 0,
    rule: str = "adabatch",
    record_every: int | None = None,
    X_test: Any = None,
    y_test: Any = None,
    w0: Any = None,
    start_method: str | None = None,
) -> SolverResult:
    """Synchronous data-parallel mini-batch AdaBatch with ``workers`` processes (module doc).

    The iterates are those of ``sgd(X, y, batch_size=b, rule=rule, ...)`` with the same seed,
    up to the rounding of adding per-worker partial sums (bitwise for ``workers=1``).

    Args:
        X: n × d training rows, scipy.sparse CSR (stored zeros ignored).
        y: n targets (0/1 or −1/+1 for ``logistic``; real for ``squared``).
        workers: W ≥ 1 processes: this one (worker 0, which also records) and W − 1 children.
        loss: ``"logistic"``, ``"squared"`` or a `Loss`.
        batch_size: b ≥ W, so that every worker gets a share of each full batch (a short last
            batch of an epoch may leave some workers an empty share; that is handled).
        step_size: γ > 0, the single-sample step (not scaled with b).
        l2: λ ≥ 0 with γλ < 1; applied as the dense decay w ← (1 − γλ)w (never divided by
            counts), in O(1) through w = a·v.
        epochs: passes over the data (> 0, may be fractional: round(epochs·n) samples).
        seed: seed of the epoch permutations (`sgd`'s: ``default_rng(seed).permutation``).
        rule: ``"adabatch"`` (dⱼ = sⱼ/cⱼ) or ``"mean"`` (d = s/|B|).
        record_every: record f(w) every this many samples (default n); start and end always.
        X_test: optional test rows (CSR) for the trace's test error.
        y_test: their labels.
        w0: starting weights (default 0).
        start_method: ``"fork"`` (default where available: X is shared, not copied),
            ``"spawn"`` or ``"forkserver"`` (X and the order are pickled to each child).

    Returns:
        `SolverResult`: final w and the `Trace` (``time`` excludes the evaluations and the
        process start-up; the children wait at a barrier while the parent evaluates).

    Raises:
        TypeError: X (or X_test) is not CSR; workers, batch_size or seed not an integer.
        ValueError: bad arguments; the message says which value and how to fix it.
        DivergenceError: the iterate became NaN/infinite in the parent (worker 0).
        WorkerError: a child raised (``__cause__`` is its exception, e.g. a DivergenceError)
            or died; all processes are stopped and reaped before it propagates.
    """
    run = prepare_team_run(
        X, y, solver="parallel AdaBatch", workers=workers, loss=loss, step_size=step_size,
        l2=l2, epochs=epochs, seed=seed, record_every=record_every, X_test=X_test,
        y_test=y_test, w0=w0, start_method=start_method,
    )  # fmt: skip
    pb, W = run.pb, run.workers
    n, d = pb.X.shape
    b = as_int(batch_size, "batch_size", 1, hint="; pass the number of samples per step")
    if b < W:
        raise ValueError(
            f"batch_size must be >= workers so that every worker gets a share of each batch, "
            f"got batch_size={b} < workers={W}; raise batch_size or lower workers"
        )
    rule = check_rule(rule)
    if pb.l2 * pb.step_size >= 1:
        raise ValueError(
            f"step_size·l2 must be < 1 (the L2 decay factor 1 − γλ must stay positive), got "
            f"step_size={pb.step_size:g} and l2={pb.l2:g}; lower the step size or l2"
        )
    b = min(b, n)
    share = -(-b // W)
    capacity = max(1, int(np.sort(np.diff(pb.indptr))[-share:].sum()))
    job = _Job(
        problem=pb,
        order=np.concatenate(list(epoch_orders(n, run.seed, pb.total))),
        batch_size=b,
        rule=rule,
        workers=W,
        capacity=capacity,
        bounds=_owner_bounds(pb.indices, n, d, share, W),
    )
    hook = _RecordHook(run.rec, pb)
    if W == 1:
        bufs = _Buffers(
            run.w0,
            np.zeros(capacity, np.int64),
            np.zeros(capacity),
            np.zeros(capacity, np.int64),
            np.zeros(1, np.int64),
        )
        _adabatch_rank(0, Solo(), job, bufs, hook)
        return hook.finish(bufs.v)
    team = Team("parallel_adabatch", start_method)
    try:
        raw = team.ctx.RawArray
        bufs = _Buffers(
            raw("d", d),
            raw("q", W * capacity),
            raw("d", W * capacity),
            raw("q", W * capacity),
            raw("q", W),
        )
        v = as_array(bufs.v, np.float64)
        v[:] = run.w0
        team.start(_adabatch_child, range(1, W), (job, bufs))
        _adabatch_rank(0, team, job, bufs, hook)
        return hook.finish(v)
    finally:
        team.close()


class _RecordHook:
    """Worker 0's recording between steps, as `sgd` records (w = a·v built only then)."""

    def __init__(self, rec: Recorder, pb: Problem) -> None:
        self.rec, self.pb, self.next = rec, pb, 0
        self.a = 1.0

    def __call__(self, samples: int, v: np.ndarray, a: float) -> None:
        self.a = a
        if samples == 0:
            self.rec.start()
        if samples >= self.next:
            w = v if a == 1.0 else a * v
            if not np.all(np.isfinite(w)):
                raise self.pb.diverged(f"at sample {samples}")
            self.rec.record(samples, w)
            self.pb.check_trace(self.rec)
            self.next = (samples // self.rec.every + 1) * self.rec.every

    def finish(self, v: np.ndarray) -> SolverResult:
        """The result; w = a·v is a fresh array, as the shared buffer dies with the team."""
        total = self.pb.total
        return self.pb.finish(self.rec, total, self.a * v, f"at sample {total}")
