"""The process team of the parallel sparse solvers: children, barriers, failures, shared arrays.

`adabatch.sparse.parallel` (synchronous, two barriers a step) and `adabatch.sparse.lockfree`
(Hogwild!, one barrier at the start) run their workers 1…W−1 (or 0…W−1) as child processes
of a `Team`; the parent is the hub:

* **Links.** One pipe per child, its parent end held only by the parent, so a child's death is
  an EOF there. Messages are one byte (arrive, go, abort, done, stopped); anything longer is a
  pickled error report ``(summary, traceback, pickled exception or None)``.
* **Barriers.** A child's `Link.wait` sends "arrive" and waits for "go"; the parent's
  `Team.wait` hears from every child, then releases them all. The team of one, `Solo`, has
  the same interface and does nothing, so a solver's step loop runs unchanged in one process.
* **Failures.** A child that raises sends its report and then sets the shared stop flag; one
  that dies sends nothing. Whichever the parent hears of first at a barrier (or in
  `Team.poll`), it raises `adabatch.errors.WorkerError` with the first reported cause (the
  worker's exception as ``__cause__`` when it unpickles). A child told to stop exits quietly
  (`AbortedError`); one whose parent died exits by itself (it checks at least once a second).
* **Shared arrays** are anonymous ``multiprocessing.RawArray`` buffers (`as_array` views
  them), so nothing outlives the processes; `Team.close` stops and reaps every child,
  whatever happened.
"""

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import contextlib
import multiprocessing as mp
import os
import pickle
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from typing import Any

import numpy as np

from .._validate import check_choice
from ..errors import WorkerError

__all__ = ["AbortedError", "Link", "Solo", "Team", "as_array", "mp_context"]

# One-byte messages; anything longer is a pickled error report.
_ARRIVE, _GO, _ABORT, _DONE, _STOPPED = b"a", b"g", b"x", b"d", b"s"
#: How often a child waiting at a barrier checks that its parent is still alive (seconds).
_PARENT_CHECK_S = 1.0
#: How long `Team.close` waits for a child to exit before terminating it (seconds).
_JOIN_S = 10.0


class AbortedError(Exception):
    """Raised in a child told to stop (another process failed): it exits without a report."""


def mp_context(start_method: str | None) -> Any:
    """The multiprocessing context: ``fork`` where it exists (no pickling of X), else spawn.

    Raises:
        ValueError: ``start_method`` is not a start method of this platform.
    """
    methods = mp.get_all_start_methods()
    if start_method is None:
        start_method = "fork" if "fork" in methods else "spawn"
    check_choice(
        "start_method",
        start_method,
        methods,
        hint="; those are this platform's, or pass None for the default (fork where available)",
    )
    return mp.get_context(start_method)


def as_array(buf: Any, dtype: Any) -> np.ndarray:
    """A shared ``RawArray`` as a numpy array without a copy (a numpy array as it is)."""
    return buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=dtype)


class Link:
    """A child's end of the team: barrier with the parent, stop flag."""

    def __init__(self, conn: Connection, stop: Any, parent: int) -> None:
        self.conn, self.stop, self.parent = conn, stop, parent

    def wait(self) -> None:
        """Arrive at the barrier and wait until the parent releases everyone."""
        self.conn.send_bytes(_ARRIVE)
        # Poll instead of a blocking recv: if the parent is killed, a sibling forked later may
        # still hold the parent's end of this pipe, so no EOF would ever arrive.
        while not self.conn.poll(_PARENT_CHECK_S):
            if os.getppid() != self.parent:
                raise AbortedError
        if self.conn.recv_bytes() != _GO:
            raise AbortedError

    def stopped(self) -> bool:
        """Whether another process failed (or the parent died): time to stop."""
        return bool(self.stop[0]) or os.getppid() != self.parent


class Solo:
    """The team of one: ``workers=1`` runs in the calling process, with no one to wait for."""

    def wait(self) -> None:
        """Nothing to wait for."""

    def stopped(self) -> bool:
        """Never: no other process can fail."""
        return False


def _child_main(
    target: Callable[..., None], rank: int, conn: Connection, stop: Any, parent: int, args: tuple
) -> None:
    try:
        target(rank, Link(conn, stop, parent), *args)
        conn.send_bytes(_DONE)
    except AbortedError:
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


class Team:
    """Child processes ``ranks`` running ``target(rank, link, *args)``, with the parent as hub.

    `wait` is the parent's side of a barrier: it receives one message from every child (an
    arrival, an error report, or EOF when the child died) and releases them, or raises
    `WorkerError`. `close` stops and reaps every child, whatever happened.
    """

    def __init__(self, solver: str, start_method: str | None) -> None:
        self.solver = solver
        self.ctx = mp_context(start_method)
        self.stop = self.ctx.RawArray("b", 1)
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Connection] = {}
        self.active: dict[int, Connection] = {}  # children not yet finished (for `poll`)

    def start(self, target: Callable[..., None], ranks: Sequence[int], args: tuple) -> None:
        """Start one child per rank; each runs ``target(rank, link, *args)``."""
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
        """The parent's side of a barrier (raises `WorkerError` if a child failed)."""
        for rank, conn in self.conns.items():
            self._check(rank, self._recv(conn), _ARRIVE)
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
            self._check(rank, self._recv(conn), _DONE)
            del self.active[rank]
            finished.append(rank)
        return finished

    def _recv(self, conn: Connection) -> bytes | None:
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
        """Stop every child (abort at its barrier), join it, terminate it if it hangs."""
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
