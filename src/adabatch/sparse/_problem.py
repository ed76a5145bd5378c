"""A sparse solver's validated problem, and how its runs report divergence.

Every solver of `adabatch.sparse` (`sequential`, `variance_reduction`, `parallel`, `lockfree`)
minimises f(w) = (1/n) Σᵢ φ(yᵢ, xᵢᵀw) + (λ/2)‖w‖² and starts alike: X as canonical float64
CSR, the labels mapped by `signed_labels`, the loss, the step γ, the L2 weight λ and the
budget checked (`prepare_problem`), then w0 and the `Recorder`. A `Problem` holds the result;
its `Problem.diverged` builds the `adabatch.errors.DivergenceError` every solver raises when
the iterate or the loss stops being finite, with the safe step 1/(L·max‖xᵢ‖²) in the message.
"""

# X, X_test: the matrix names of the maths (and of scikit-learn).

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

from .._validate import as_int, check_nonnegative, check_positive
from ..errors import DivergenceError
from ._process_team import mp_context
from .aggregate import require_csr
from .losses import Loss, get_loss, signed_labels
from .trace import Recorder, SolverResult

__all__ = [
    "Problem",
    "TeamRun",
    "check_labels",
    "check_w0",
    "make_recorder",
    "prepare_csr",
    "prepare_problem",
    "prepare_team_run",
]

#: The hint of a bad ``step_size`` for the SGD-type solvers.
SGD_STEP_HINT = "; pass the single-sample SGD step γ, e.g. 1/(L·max‖xᵢ‖²)"
#: The hint of a bad ``epochs`` when an epoch is a pass over the rows.
PASSES_HINT = "; pass the number of passes over the data"


def prepare_csr(X: Any, name: str = "X") -> Any:
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


def check_labels(y: Any, n: int, loss: Loss, name: str = "y") -> np.ndarray:
    """``y`` as `signed_labels`, after checking it holds one label per row of X."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must hold one label per row of X: X has {n} rows but {name} has shape "
            f"{arr.shape}; pass the targets of the same samples, as a 1-d array"
        )
    return signed_labels(arr, loss)


def check_w0(w0: Any, d: int) -> np.ndarray:
    """The starting weights as a fresh float64 vector of length d (zeros for None)."""
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


@dataclasses.dataclass(frozen=True)
class Problem:
    """Validated inputs (read-only in worker processes: inherited under fork, pickled else)."""

    solver: str  # the solver's name in messages ("SGD", "SVRG", "Hogwild!", ...)
    X: Any  # canonical float64 CSR without stored zeros
    indptr: np.ndarray  # X's arrays, indptr as int64
    indices: np.ndarray
    data: np.ndarray
    y: np.ndarray  # signed labels
    loss: Loss
    step_size: float  # γ
    l2: float  # λ
    epochs: float
    max_norm2: float  # max‖xᵢ‖², for the safe step of the divergence message

    @property
    def total(self) -> int:
        """Samples in the budget when an epoch is one pass over the rows: round(epochs·n) ≥ 1."""
        return max(1, round(self.epochs * self.X.shape[0]))

    def diverged(self, where: str = "") -> DivergenceError:
        """The error for w or the loss turned NaN or infinite ``where`` (e.g. "at sample 40").

        The message names the step size and the safe single-sample step 1/(L·max‖xᵢ‖²), with
        L the loss's smoothness (`Loss.smoothness`).
        """
        norm2, L = self.max_norm2, self.loss.smoothness
        safe = 1.0 / (L * norm2) if norm2 > 0 else float("inf")
        return DivergenceError(
            f"{self.solver}{' ' + where if where else ''}: diverged (the weights or the loss "
            f"became NaN or infinite) with step_size={self.step_size:g}; lower the step size "
            f"(for the {self.loss.name} loss a safe single-sample step is about "
            f"1/(L·max‖xᵢ‖²) = {safe:.3g})"
        )

    def check_trace(self, rec: Recorder) -> None:
        """Raise `diverged` if the loss ``rec`` just recorded is not finite."""
        if not math.isfinite(rec.trace.loss[-1]):
            raise self.diverged(f"at sample {rec.trace.samples[-1]}")

    def finish(self, rec: Recorder, samples: int, w: np.ndarray, where: str) -> SolverResult:
        """Check the final ``w``, record it (`Recorder.finish`), check its loss; the result."""
        if not np.all(np.isfinite(w)):
            raise self.diverged(where)
        result = rec.finish(samples, w)
        self.check_trace(rec)
        return result


def prepare_problem(
    X: Any,
    y: Any,
    *,
    solver: str,
    loss: Any,
    step_size: Any,
    l2: Any,
    epochs: Any,
    step_hint: str = SGD_STEP_HINT,
    epochs_hint: str = PASSES_HINT,
) -> Problem:
    """Check the arguments every solver takes and return them as a `Problem`.

    Raises:
        TypeError: X is not CSR; a step size, L2 weight or budget that is not a number.
        ValueError: X has no rows, labels that are not one per row (or not valid for the
            loss), an unknown loss, γ or epochs not > 0, λ < 0 (the message says how to fix it).
    """
    X = prepare_csr(X)
    lossf = get_loss(loss)
    n = X.shape[0]
    if n == 0:
        raise ValueError(f"X has no rows (shape {X.shape}); {solver} needs at least one sample")
    return Problem(
        solver=solver,
        X=X,
        indptr=X.indptr.astype(np.int64, copy=False),
        indices=X.indices,
        data=X.data,
        y=check_labels(y, n, lossf),
        loss=lossf,
        step_size=check_positive("step_size", step_size, hint=step_hint),
        l2=check_nonnegative(
            "l2", l2, hint="; it is the weight λ of (λ/2)‖w‖², use 0 for no regularisation"
        ),
        epochs=check_positive("epochs", epochs, hint=epochs_hint),
        max_norm2=_max_row_norm2(X),
    )


def make_recorder(
    pb: Problem, every: int | None, default_every: int, X_test: Any, y_test: Any
) -> Recorder:
    """The `Recorder` of a run on ``pb``: f(w) every ``every`` samples (default the given one)."""
    if (X_test is None) != (y_test is None):
        raise ValueError("pass X_test and y_test together (or neither)")
    if every is None:
        every = default_every
    every = as_int(every, "record_every", 1, hint="; it is a number of samples")
    if X_test is not None:
        X_test = require_csr(X_test, "X_test")
        if X_test.shape[1] != pb.X.shape[1]:
            raise ValueError(
                f"X_test has {X_test.shape[1]} columns but X has {pb.X.shape[1]}; the test set "
                "must use the training set's features"
            )
        if np.asarray(y_test).reshape(-1).shape[0] != X_test.shape[0]:
            raise ValueError(
                f"y_test has {np.asarray(y_test).size} labels but X_test has {X_test.shape[0]} rows"
            )
    return Recorder(pb.X, pb.y, pb.loss, pb.l2, every=every, X_test=X_test, y_test=y_test)


def _max_row_norm2(X: Any) -> float:
    if X.nnz == 0:
        return 0.0
    sq = np.bincount(
        np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), weights=X.data**2, minlength=0
    )
    return float(sq.max())


class TeamRun(NamedTuple):
    """The checked arguments of a parallel solver (`parallel_adabatch`, `hogwild`)."""

    pb: Problem
    workers: int
    w0: np.ndarray
    seed: int
    rec: Recorder


def prepare_team_run(
    X: Any,
    y: Any,
    *,
    solver: str,
    workers: Any,
    loss: Any,
    step_size: Any,
    l2: Any,
    epochs: Any,
    seed: Any,
    record_every: Any,
    X_test: Any,
    y_test: Any,
    w0: Any,
    start_method: Any,
) -> TeamRun:
    """`prepare_problem` plus the options of a solver that runs on a process team.

    Raises:
        TypeError, ValueError: as `prepare_problem`; X without columns; a number of workers
            or a seed that is not an integer (≥ 1, ≥ 0); an unknown ``start_method``; ``w0``,
            ``record_every`` or the test set (the message says which and how to fix it).
    """
    mp_context(start_method)  # checked even for one worker, which starts no process
    pb = prepare_problem(X, y, solver=solver, loss=loss, step_size=step_size, l2=l2, epochs=epochs)
    n, d = pb.X.shape
    if d == 0:
        raise ValueError(f"X has no columns (shape {pb.X.shape}); {solver} needs a feature")
    return TeamRun(
        pb=pb,
        workers=as_int(
            workers, "workers", 1, hint="; use 1 to run in this process, or the number of CPU cores"
        ),
        w0=check_w0(w0, d),
        seed=as_int(seed, "seed", 0, hint="; the seed of the epoch permutations, e.g. 0"),
        rec=make_recorder(pb, record_every, n, X_test, y_test),
    )
