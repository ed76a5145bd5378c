"""Every error adabatch raises on purpose, in one place.

Each message says what was wrong, the value received and how to fix it. The classes derive
from the built-in exception a caller would already catch for that kind of failure
(``ValueError`` for bad input, ``FileNotFoundError`` for missing files, ...), so
``except ValueError`` keeps working around adabatch calls.

==========================  ======================  =============================================
class                       derives from            raised when
==========================  ======================  =============================================
`ConfigError`               ValueError              a configuration key or value is invalid
`DivergenceError`           FloatingPointError      a loss or an iterate became NaN or infinite
`DatasetNotFoundError`      FileNotFoundError       a data set's files are nowhere searched
`FetchError`                DatasetNotFoundError    every route of ``adabatch data fetch`` failed
`DatasetFormatError`        ValueError              a data set file is truncated or malformed
`RunError`                  RuntimeError            a run directory cannot be used, or a run
                                                    did not finish
`DivergedRunError`          RunError                a run's loss diverged
`ReportError`               ValueError              saved run files cannot be read or compared
`WorkerError`               RuntimeError            a worker process of a parallel solver failed
`RankMismatchError`         RuntimeError            the ranks of a distributed run disagree on
                                                    a decision they must share
`RuleMismatchError`         RuntimeError            a layer computes something else than its
                                                    per-sample rule assumes
==========================  ======================  =============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DivergedRunError",
    "DivergenceError",
    "FetchError",
    "RankMismatchError",
    "ReportError",
    "RuleMismatchError",
    "RunError",
    "WorkerError",
]


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what is valid."""


class DivergenceError(FloatingPointError):
    """A loss or an iterate became NaN or infinite (the step size is usually too large).

    The trainer raises it before the non-finite loss reaches the parameters; the sparse
    solvers raise it when their iterate overflows.
    """


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files were found in none of the places searched.

    The message names the data set, every directory searched, and how to get the files:
    ``adabatch data fetch NAME`` or where to put them by hand.
    """

    def __init__(self, name: str, searched: Sequence[Path], hint: str) -> None:
        self.name = name
        self.searched = [Path(p) for p in searched]
        where = "\n".join(f"  - {p}" for p in self.searched) or "  (no directory)"
        super().__init__(f"data set {name!r} not found; looked in:\n{where}\n{hint}")


class FetchError(DatasetNotFoundError):
    """Every route of a data set failed (``adabatch data fetch``).

    A `DatasetNotFoundError`, so that code catching "data set missing" catches this too. The
    message names the data set, the target directory, every URL or route tried with the reason
    it failed, and where to put the files by hand.

    Attributes:
        attempts: the failed tries, in order. Each prints as one line; those whose ``skipped``
            attribute is true (not tried: their host was found unreachable before) are only
            counted.
    """

    def __init__(self, name: str, target: Path, attempts: Sequence[Any], manual: str) -> None:
        self.attempts = list(attempts)
        tried = [a for a in self.attempts if not getattr(a, "skipped", False)]
        lines = [f"  {i}. {a}" for i, a in enumerate(tried, 1)] or ["  (nothing)"]
        if skipped := len(self.attempts) - len(tried):
            lines.append(f"  ({skipped} more URLs on hosts found unreachable above: not tried)")
        listing = "\n".join(lines)
        hint = f"and it could not be downloaded; tried:\n{listing}\nTo install it by hand: {manual}"
        super().__init__(name, [target], hint)


class DatasetFormatError(ValueError):
    """A data set file exists but is truncated, corrupted or not in the expected format.

    The message names the file, what was expected and what was found.
    """

    def __init__(self, path: str | Path, expected: str, found: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}: expected {expected}, found {found}")


class RunError(RuntimeError):
    """A run cannot start or did not finish; the message says why and what to do."""


class DivergedRunError(RunError):
    """The run's training loss became non-finite (``summary.json`` says "diverged")."""


class ReportError(ValueError):
    """Saved run files that cannot be read or compared; the message names the path."""


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


class RankMismatchError(RuntimeError):
    """The ranks of a distributed run disagree on something they must share (a decision).

    Raised on every rank at once, so the run ends instead of hanging in the next collective.
    """


class RuleMismatchError(RuntimeError):
    """A layer's output differs from what its registered per-sample rule assumes it computes.

    Raised on the first call of a layer of another library (a Hugging Face RMSNorm, Conv1D)
    whose forward changed: the statistics and the gradient would otherwise be wrong.
    """
