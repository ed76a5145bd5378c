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

Example: rows x₀ = (1, 1, 0), x₁ = (1, 0, 1) with φ′ = (0.5, −1) on W = 2 workers give the
partials s⁽⁰⁾ = (0.5, 0.5, ·), s⁽¹⁾ = (−1, ·, −1) and d = (−0.25, 0.5, −1).

Exactness. The sequential `aggregate` sums each column over the batch rows in order; here
each worker sums its own rows in order and the partials are then added in worker order, so
dⱼ is bitwise the sequential value whenever column j occurs in one share only, and otherwise
differs by the re-association (a + b) + (c + e) vs ((a + b) + c) + e, i.e. by rounding
(≈ 1e-16 relative). With ``workers=1`` the solver repeats `sgd`'s floating-point operations
and gives its weights bitwise.

Shared memory and cost. The weights live in one shared array (the scale trick w = a·v of
`sgd`: a is a scalar every worker updates identically, so the dense L2 decay costs O(1)).
Each worker writes its partial (sorted support, sums, counts) into its own slot of a shared
per-step buffer; after a barrier, worker r combines the partials restricted to the columns it
owns (a fixed range [lo_r, hi_r), balanced on the expected batch support) and updates v on
them; a second barrier publishes w. A step is O(nnz(B) log nnz(B)) work, never O(d). The
parent process is worker 0 (and records the trace between steps); workers 1…W−1 are child
processes. The barriers are messages through a pipe per child with the parent as hub, so a
worker that raises or dies is noticed at the next barrier and its error is re-raised in the
parent as `WorkerError`; all shared arrays are anonymous (``multiprocessing.RawArray``), so
nothing outlives the processes. A child whose parent dies exits by itself (it checks at
every barrier wait, at least once a second).

When more workers help. A barrier is a pipe round trip, about 75 µs on a 2-vCPU VM, and a
step has two, while the work a step splits is about 20 numpy calls plus O(nnz(B)). Measured
on synthetic_sparse(100 000, 100 000, nnz_per_sample=30), one epoch, 2 vCPUs: b = 128 takes
0.14 s with one worker and 0.30 s with two (the barriers cost more than the halved work);
b = 2048: 0.12 s vs 0.10 s; b = 8192: 0.12 s vs 0.08 s. So W > 1 pays from roughly
b·nnz-per-row ≈ 50 000 nonzeros per step; below that use ``workers=1`` (or `sgd`).
"""

# X, X_share, X_test: the matrix names of the maths.

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing as mp
import os
import pickle
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from typing import Any

import numpy as np

from ..data.sampler import rank_span
from ._common import (
    _RENORM_BELOW,
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
from .aggregate import _check_coef
from .losses import Loss, get_loss
from .trace import Recorder, SolverResult

__all__ = ["Partial", "WorkerError", "combine_partials", "parallel_adabatch", "share_partial"]


# --------------------------------------------------------------------------------------------
# The maths: a worker's partial and the combination (pure functions).


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
    X = _prepare_csr(X_share, "X_share")
    b = X.shape[0]
    coef = _check_coef(coef, b)
    rowid = np.repeat(np.arange(b, dtype=np.int64), np.diff(X.indptr))
    columns, inv = np.unique(X.indices.astype(np.int64), return_inverse=True)
    k = columns.shape[0]
    sums = np.bincount(inv, weights=coef[rowid] * X.data, minlength=k)
    return Partial(columns, sums, np.bincount(inv, minlength=k).astype(np.int64), b)


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
    rule = _check_rule(rule)
    if not partials:
        raise ValueError("combine_partials needs at least one Partial, got none")
    rows = sum(int(p.rows) for p in partials)
    if rows < 1:
        raise ValueError("the partials hold 0 rows in all; a batch needs at least one sample")
    return _combine(
        [np.asarray(p.columns) for p in partials],
        [np.asarray(p.sums, dtype=np.float64) for p in partials],
        [np.asarray(p.counts) for p in partials],
        rows,
        rule,
    )


def _combine(
    columns: list[np.ndarray],
    sums: list[np.ndarray],
    counts: list[np.ndarray],
    rows: int,
    rule: str,
) -> tuple[np.ndarray, np.ndarray]:
    """`combine_partials` on raw arrays (also a column slice of each partial, in the solver)."""
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


# --------------------------------------------------------------------------------------------
# Process team: children, pipe barriers with the parent as hub, error propagation.


class WorkerError(RuntimeError):
    """A worker process of a parallel solver raised or died.

    The message holds the worker's traceback; ``__cause__`` is the worker's exception when it
    could be pickled back. Attributes: ``rank``, ``pid``, ``remote_traceback``.
    """

    def __init__(
        self, message: str, rank: int = -1, pid: int | None = None, remote_traceback: str = ""
    ) -> None:
        super().__init__(message)
        self.rank, self.pid, self.remote_traceback = rank, pid, remote_traceback

    def __reduce__(self) -> tuple:
        # Picklable with its attributes, e.g. when the solver itself runs in a worker process.
        return (type(self), (self.args[0], self.rank, self.pid, self.remote_traceback))


class _AbortedError(Exception):
    """Raised in a child told to stop (another process failed): it exits without a report."""


# One-byte messages; anything longer is a pickled error report.
_ARRIVE, _GO, _ABORT, _DONE, _STOPPED = b"a", b"g", b"x", b"d", b"s"
#: How often a child waiting at a barrier checks that its parent is still alive (seconds).
_PARENT_CHECK_S = 1.0
#: How long `close` waits for a child to exit before terminating it (seconds).
_JOIN_S = 10.0


def _context(start_method: str | None) -> Any:
    """The multiprocessing context: ``fork`` where it exists (no pickling of X), else spawn."""
    methods = mp.get_all_start_methods()
    if start_method is None:
        start_method = "fork" if "fork" in methods else "spawn"
    if start_method not in methods:
        raise ValueError(
            f"start_method must be one of {', '.join(map(repr, methods))} on this platform, got "
            f"{start_method!r}; pass None for the default"
        )
    return mp.get_context(start_method)


class _Link:
    """A child's end of the team: barrier with the parent, stop flag."""

    def __init__(self, conn: Connection, stop: Any, parent: int) -> None:
        self.conn, self.stop, self.parent = conn, stop, parent

    def wait(self) -> None:
        self.conn.send_bytes(_ARRIVE)
        # Poll instead of a blocking recv: if the parent is killed, a sibling forked later may
        # still hold the parent's end of this pipe, so no EOF would ever arrive.
        while not self.conn.poll(_PARENT_CHECK_S):
            if os.getppid() != self.parent:
                raise _AbortedError
        if self.conn.recv_bytes() != _GO:
            raise _AbortedError

    def stopped(self) -> bool:
        return bool(self.stop[0]) or os.getppid() != self.parent


class _Solo:
    """The team of one: ``workers=1`` runs in the calling process."""

    def wait(self) -> None:
        pass

    def stopped(self) -> bool:
        return False


def _child_main(
    target: Callable[..., None], rank: int, conn: Connection, stop: Any, parent: int, args: tuple
) -> None:
    try:
        target(rank, _Link(conn, stop, parent), *args)
        conn.send_bytes(_DONE)
    except _AbortedError:
        # Another process failed and reports the cause; say we stopped, not crashed.
        with contextlib.suppress(OSError):
            conn.send_bytes(_STOPPED)
    except BaseException as exc:  # report everything, KeyboardInterrupt included
        try:
            payload: bytes | None = pickle.dumps(exc)
        except Exception:
            payload = None
        report = (f"{type(exc).__name__}: {exc}", traceback.format_exc(), payload)
        with contextlib.suppress(OSError):  # the parent may be gone
            conn.send_bytes(pickle.dumps(report))
        # Only now stop the others: the report is in the pipe before any of them can stop,
        # so the parent finds it whichever child it hears from first.
        stop[0] = 1
    finally:
        conn.close()


class _Team:
    """Child processes ``ranks`` running ``target(rank, link, *args)``, with the parent as hub.

    `wait` is the parent's side of a barrier: it receives one message from every child (an
    arrival, an error report, or EOF when the child died) and releases them, or raises
    `WorkerError`. `close` stops and reaps every child, whatever happened.
    """

    def __init__(self, solver: str, start_method: str | None) -> None:
        self.solver = solver
        self.ctx = _context(start_method)
        self.stop = self.ctx.RawArray("b", 1)
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Connection] = {}
        self.active: dict[int, Connection] = {}  # children not yet finished (for `poll`)

    def start(self, target: Callable[..., None], ranks: Sequence[int], args: tuple) -> None:
        for rank in ranks:
            mine, theirs = self.ctx.Pipe()
            proc = self.ctx.Process(
                target=_child_main,
                args=(target, rank, theirs, self.stop, os.getpid(), args),
                name=f"adabatch-{self.solver}-{rank}",
                daemon=True,  # never outlive the parent, even if it is killed
            )
            try:
                proc.start()
            except BaseException:
                mine.close()
                raise
            finally:
                theirs.close()  # only the child holds its end: its death is then an EOF here
            self.procs[rank], self.conns[rank], self.active[rank] = proc, mine, mine

    def wait(self) -> None:
        for rank, conn in self.conns.items():
            self._check(rank, self._recv(rank, conn), _ARRIVE)
        for rank, conn in self.conns.items():
            try:
                conn.send_bytes(_GO)
            except OSError:  # died between arriving and now
                self._check(rank, None, _GO)

    def poll(self, timeout: float) -> list[int]:
        """Ranks that finished within ``timeout`` seconds (raises if one failed)."""
        finished = []
        for conn in wait_any(list(self.active.values()), timeout):
            rank = next(r for r, c in self.active.items() if c is conn)
            self._check(rank, self._recv(rank, conn), _DONE)
            del self.active[rank]
            finished.append(rank)
        return finished

    def _recv(self, rank: int, conn: Connection) -> bytes | None:
        try:
            return conn.recv_bytes()
        except (EOFError, OSError):
            return None

    def _pending_report(self) -> tuple[int, bytes] | None:
        """An error report already waiting in some child's pipe (the primary failure)."""
        for rank, conn in self.conns.items():
            try:
                while conn.poll(0):
                    msg = conn.recv_bytes()
                    if len(msg) > 1:
                        return rank, msg
            except (EOFError, OSError):
                continue
        return None

    def _check(self, rank: int, msg: bytes | None, expected: bytes) -> None:
        if msg == expected:
            return
        if msg is None or len(msg) == 1:
            # A child that stopped or vanished may be a consequence of another's error:
            # prefer that error if it has been reported.
            found = self._pending_report()
            if found is None:
                proc = self.procs[rank]
                proc.join(timeout=1.0)
                what = (
                    "was stopped without a reported cause"
                    if msg == _STOPPED
                    else f"stopped unexpectedly (exit code {proc.exitcode}) without reporting an "
                    "error: a crash in native code, being killed (e.g. out of memory), or os._exit"
                )
                raise WorkerError(
                    f"{self.solver} worker {rank} (pid {proc.pid}) {what}", rank, proc.pid
                )
            rank, msg = found
        proc = self.procs[rank]
        where = f"{self.solver} worker {rank} (pid {proc.pid})"
        summary, tb, payload = pickle.loads(msg)  # our own child's report
        cause = None
        if payload is not None:
            try:
                cause = pickle.loads(payload)
            except Exception:
                cause = None
        raise WorkerError(
            f"{where} failed with {summary}\n--- worker traceback ---\n{tb}", rank, proc.pid, tb
        ) from cause

    def close(self) -> None:
        self.stop[0] = 1
        for conn in self.conns.values():
            with contextlib.suppress(OSError):  # a child that already exited
                conn.send_bytes(_ABORT)  # wakes children waiting at a barrier
        for proc in self.procs.values():
            proc.join(timeout=_JOIN_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=_JOIN_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns.values():
            conn.close()


# --------------------------------------------------------------------------------------------
# Setup shared by the parallel solvers.


@dataclasses.dataclass(frozen=True)
class _Problem:
    """Validated inputs (read-only in the workers: inherited under fork, pickled under spawn)."""

    X: Any  # canonical float64 CSR without stored zeros
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    y: np.ndarray  # signed labels
    loss: Loss
    step_size: float
    l2: float
    total: int  # samples to process, round(epochs·n)
    max_norm2: float


def _prepare(X: Any, y: Any, loss: Any, step_size: Any, l2: Any, epochs: Any) -> _Problem:
    X = _prepare_csr(X)
    n, d = X.shape
    if n == 0 or d == 0:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    lossf = get_loss(loss)
    gamma = _check_positive_float(
        "step_size", step_size, "pass the single-sample SGD step γ, e.g. 1/(L·max‖xᵢ‖²)"
    )
    epochs = _check_positive_float("epochs", epochs, "pass the number of passes over the data")
    return _Problem(
        X=X,
        indptr=X.indptr.astype(np.int64, copy=False),
        indices=X.indices,
        data=X.data,
        y=_check_labels(y, n, lossf),
        loss=lossf,
        step_size=gamma,
        l2=_check_l2(l2),
        total=max(1, round(epochs * n)),
        max_norm2=_max_row_norm2(X),
    )


def _check_workers(workers: Any) -> int:
    return _check_positive_int(
        "workers", workers, "use 1 to run in this process, or the number of CPU cores"
    )


def _epoch_orders(n: int, seed: int, total: int) -> Iterator[np.ndarray]:
    """`sgd`'s order: the e-th ``default_rng(seed).permutation(n)``, cut at ``total`` samples."""
    rng = np.random.default_rng(seed)
    for start in range(0, total, n):
        yield rng.permutation(n)[: min(n, total - start)]


# --------------------------------------------------------------------------------------------
# parallel_adabatch


@dataclasses.dataclass(frozen=True)
class _Job:
    problem: _Problem
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


def _view(buf: Any, dtype: Any) -> np.ndarray:
    return buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=dtype)


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
    pb = job.problem
    rowid, cols, vals = _gather(pb.indptr, pb.indices, pb.data, rows)
    # `sgd`'s exact operations, so that one worker reproduces it bitwise.
    z = a * np.bincount(rowid, weights=vals * v[cols], minlength=rows.shape[0])
    if not np.all(np.isfinite(z)):
        raise _diverged(f"parallel AdaBatch at sample {start}", pb.step_size, pb.loss, pb.max_norm2)
    coef = pb.loss.derivative(pb.y[rows], z)
    support, inv = np.unique(cols, return_inverse=True)
    k = support.shape[0]
    out_cols, out_sums, out_counts = slot
    out_cols[:k] = support
    out_sums[:k] = np.bincount(inv, weights=coef[rowid] * vals, minlength=k)
    out_counts[:k] = np.bincount(inv, minlength=k)
    return k


def _single_row_step(job: _Job, v: np.ndarray, a: float, a_next: float, row: int, at: int) -> None:
    """A batch of one row: `sgd`'s plain-SGD update, done by the worker holding the row."""
    pb = job.problem
    lo, hi = pb.indptr[row], pb.indptr[row + 1]
    cols, vals = pb.indices[lo:hi], pb.data[lo:hi]
    z = a * float(np.dot(vals, v[cols]))
    if not math.isfinite(z):
        raise _diverged(f"parallel AdaBatch at sample {at}", pb.step_size, pb.loss, pb.max_norm2)
    coef = float(pb.loss.derivative(pb.y[row : row + 1], np.array([z]))[0])
    v[cols] -= (pb.step_size * coef / a_next) * vals


def _adabatch_rank(
    rank: int,
    barrier: Any,
    job: _Job,
    bufs: _Buffers,
    on_step: Callable[[int, np.ndarray, float], None] | None = None,
) -> None:
    """The step loop of worker ``rank`` (the parent runs rank 0 with ``on_step`` recording)."""
    pb, W, cap = job.problem, job.workers, job.capacity
    v = _view(bufs.v, np.float64)
    part_cols = _view(bufs.columns, np.int64).reshape(W, cap)
    part_sums = _view(bufs.sums, np.float64).reshape(W, cap)
    part_counts = _view(bufs.counts, np.int64).reshape(W, cap)
    lengths = _view(bufs.lengths, np.int64)
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
        # Phase 1: partials (reads v only).
        if size == 1:
            if rows.shape[0]:
                _single_row_step(job, v, a, a_next, int(rows[0]), start)
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
                support, direction = _combine(cols, sums, counts, size, job.rule)
                v[support] -= (gamma / a_next) * direction
        a = a_next
        if a < _RENORM_BELOW:  # every worker decides alike and folds its own range
            v[lo:hi] *= a
            a = 1.0
        barrier.wait()  # v complete for the next step
        if on_step is not None:
            on_step(end, v, a)


def _adabatch_child(rank: int, link: _Link, job: _Job, bufs: _Buffers) -> None:
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
        TypeError: X (or X_test) is not CSR.
        ValueError: bad arguments; the message says which value and how to fix it.
        DivergenceError: the iterate became NaN/infinite in the parent (worker 0).
        WorkerError: a child raised (``__cause__`` is its exception, e.g. a DivergenceError)
            or died; all processes are stopped and reaped before it propagates.
    """
    _context(start_method)  # validate it even for one worker
    pb = _prepare(X, y, loss, step_size, l2, epochs)
    n, d = pb.X.shape
    W = _check_workers(workers)
    b = _check_positive_int("batch_size", batch_size, "pass the number of samples per step")
    if b < W:
        raise ValueError(
            f"batch_size must be >= workers so that every worker gets a share of each batch, "
            f"got batch_size={b} < workers={W}; raise batch_size or lower workers"
        )
    rule = _check_rule(rule)
    if pb.l2 * pb.step_size >= 1:
        raise ValueError(
            f"step_size·l2 must be < 1 (the L2 decay factor 1 − γλ must stay positive), got "
            f"step_size={pb.step_size:g} and l2={pb.l2:g}; lower the step size or l2"
        )
    v0 = _check_w0(w0, d)
    seed = _check_seed(seed)
    rec = _make_recorder(pb.X, pb.y, pb.loss, pb.l2, record_every, n, X_test, y_test)
    b = min(b, n)
    share = -(-b // W)
    lengths = np.diff(pb.indptr)
    capacity = max(1, int(np.sort(lengths)[-share:].sum()))
    job = _Job(
        problem=pb,
        order=np.concatenate(list(_epoch_orders(n, seed, pb.total))),
        batch_size=b,
        rule=rule,
        workers=W,
        capacity=capacity,
        bounds=_owner_bounds(pb.indices, n, d, share, W),
    )
    hook = _RecordHook(rec, pb)
    if W == 1:
        bufs = _Buffers(
            v0,
            np.zeros(capacity, np.int64),
            np.zeros(capacity),
            np.zeros(capacity, np.int64),
            np.zeros(1, np.int64),
        )
        _adabatch_rank(0, _Solo(), job, bufs, hook)
        return hook.finish(bufs.v, pb.total)
    team = _Team("parallel_adabatch", start_method)
    try:
        raw = team.ctx.RawArray
        bufs = _Buffers(
            raw("d", d),
            raw("q", W * capacity),
            raw("d", W * capacity),
            raw("q", W * capacity),
            raw("q", W),
        )
        v = _view(bufs.v, np.float64)
        v[:] = v0
        team.start(_adabatch_child, range(1, W), (job, bufs))
        _adabatch_rank(0, team, job, bufs, hook)
        return hook.finish(v, pb.total)
    finally:
        team.close()


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}; e.g. 0")
    return int(seed)


class _RecordHook:
    """Worker 0's recording between steps, as `sgd` records (w = a·v built only then)."""

    def __init__(self, rec: Recorder, pb: _Problem) -> None:
        self.rec, self.pb, self.next = rec, pb, 0
        self.a = 1.0

    def __call__(self, samples: int, v: np.ndarray, a: float) -> None:
        self.a = a
        if samples == 0:
            self.rec.start()
        if samples >= self.next:
            w = v if a == 1.0 else a * v
            if not np.all(np.isfinite(w)):
                raise self._diverged(samples)
            self.rec.record(samples, w)
            self._check_trace()
            self.next = (samples // self.rec.every + 1) * self.rec.every

    def _check_trace(self) -> None:
        pb = self.pb
        _check_trace(self.rec, "parallel AdaBatch", pb.step_size, pb.loss, pb.max_norm2)

    def _diverged(self, samples: int) -> Exception:
        pb = self.pb
        return _diverged(
            f"parallel AdaBatch at sample {samples}", pb.step_size, pb.loss, pb.max_norm2
        )

    def finish(self, v: np.ndarray, total: int) -> SolverResult:
        w = self.a * v  # a fresh array: the shared buffer dies with the team
        if not np.all(np.isfinite(w)):
            raise self._diverged(total)
        result = self.rec.finish(total, w)
        self._check_trace()
        return result
