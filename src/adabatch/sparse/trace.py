"""What a sparse solver returns: the weights and the trace of its progress.

A `Recorder` evaluates the full training objective (and the test error when a test set is
given) at fixed sample counts; evaluation time is kept out of the trace's ``time``, which is
the solver's own time, so wall-clock comparisons measure the optimisation alone.
"""

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import dataclasses
import time
from typing import Any

import numpy as np

from .._validate import as_int
from .aggregate import require_csr
from .losses import Loss, get_loss, objective, signed_labels

__all__ = ["Recorder", "SolverResult", "Trace", "error_rate"]


@dataclasses.dataclass
class Trace:
    """Progress measured at ``samples`` (samples processed, summed over workers)."""

    samples: list[int] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)  # training objective f(w)
    test_error: list[float | None] = dataclasses.field(default_factory=list)  # fraction
    time: list[float] = dataclasses.field(default_factory=list)  # solver seconds

    def as_dict(self) -> dict[str, list[Any]]:
        """Plain lists, for JSON."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SolverResult:
    """The final weights and the trace."""

    w: np.ndarray
    trace: Trace


def error_rate(X: Any, y: np.ndarray, w: np.ndarray, loss: str | Loss) -> float | None:
    """Misclassification rate sign(xᵀw) ≠ y for the logistic loss; None for regression."""
    if get_loss(loss).name != "logistic":
        return None
    z = np.asarray(require_csr(X) @ w).reshape(-1)
    return float(np.mean(np.where(z > 0, 1.0, -1.0) != y))


class Recorder:
    """Records f(w) (and the test error) every ``every`` samples, timing the solver apart.

    Use: ``rec = Recorder(...)``, ``rec.start()``, then after each step
    ``rec.maybe(samples, w)``; ``rec.finish(samples, w)`` at the end (always records).
    """

    def __init__(
        self,
        X: Any,
        y: np.ndarray,
        loss: str | Loss,
        l2: float,
        *,
        every: int,
        X_test: Any = None,
        y_test: Any = None,
    ) -> None:
        self.every = as_int(every, "record_every", 1, hint="; it is a number of samples")
        self.loss, self.l2 = get_loss(loss), float(l2)
        self.X, self.y = X, signed_labels(y, self.loss)  # 0/1 labels would mis-state f(w)
        self.X_test = None if X_test is None else require_csr(X_test, "X_test")
        self.y_test = None if y_test is None else signed_labels(y_test, self.loss)
        self.trace = Trace()
        self._next = 0
        self._elapsed = 0.0
        self._since = time.perf_counter()  # `start` restarts it; never "time since boot"

    def start(self) -> None:
        """Start (or restart after a pause) the solver clock."""
        self._since = time.perf_counter()

    def maybe(self, samples: int, w: np.ndarray) -> None:
        """Record if ``samples`` reached the next multiple of ``every``."""
        if samples >= self._next:
            self.record(samples, w)

    def record(self, samples: int, w: np.ndarray) -> None:
        """Record now (the evaluation is not timed)."""
        self._elapsed += time.perf_counter() - self._since
        t = self.trace
        t.samples.append(int(samples))
        t.time.append(self._elapsed)
        t.loss.append(objective(self.X, self.y, w, self.loss, self.l2))
        t.test_error.append(
            None if self.X_test is None else error_rate(self.X_test, self.y_test, w, self.loss)
        )
        self._next = (samples // self.every + 1) * self.every
        self._since = time.perf_counter()

    def finish(self, samples: int, w: np.ndarray) -> SolverResult:
        """Record the final point (unless just recorded) and return the result."""
        if not self.trace.samples or self.trace.samples[-1] != samples:
            self.record(samples, w)
        return SolverResult(w, self.trace)
