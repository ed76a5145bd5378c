"""AdaBatch (Défossez & Bach, arXiv 1711.01761): per-coordinate aggregation for sparse models.

Instead of averaging a mini-batch's gradients, each coordinate of the summed gradient is divided
by the number of samples in the batch where that feature is non-zero (`aggregate`), at the
single-sample step size: sparse linear models keep SGD's sample efficiency as the batch grows.

* `aggregate`, `column_counts` — the rule; `adabatch.sparse.losses` — logistic and squared
  losses with an explicit L2 term;
* `sgd` — sequential SGD, mini-batch SGD with mean aggregation, mini-batch AdaBatch;
* `parallel_adabatch` — synchronous data-parallel AdaBatch over worker processes (partial sums
  and counts, added, then divided: `adabatch.sparse.partials`); `hogwild` — the lock-free
  asynchronous baseline;
* `svrg` — mini-batch SVRG with AdaBatch aggregation of the variance-reduced term;
* `EmbeddingAggregation`, `AdaBatchEmbeddings` — the same rule for the rows of ``nn.Embedding``
  tables in deep networks.

``benchmarks/sparse_adabatch.py`` runs the comparison; BENCHMARKS.md has its tables.

Dependencies. The embedding tables need torch only; the solvers need numpy and scipy (the
``sparse`` extra: ``pip install "adabatch[sparse]"``). Without them this package still imports
and so does `adabatch.sparse.embedding`; a solver's name (``from adabatch.sparse import sgd``)
or module (``import adabatch.sparse.sequential``) raises an ImportError that says what to
install. With them, every name below is imported here, as plain attributes.
"""

from __future__ import annotations

from typing import Any

from ..errors import DivergenceError, WorkerError
from .embedding import AdaBatchEmbeddings, EmbeddingAggregation

__all__ = [
    "AGGREGATION_RULES",
    "CORRECTIONS",
    "LOSSES",
    "AdaBatchEmbeddings",
    "DivergenceError",
    "EmbeddingAggregation",
    "Loss",
    "SolverResult",
    "Trace",
    "WorkerError",
    "aggregate",
    "column_counts",
    "combine_partials",
    "coverage_scaling",
    "full_gradient",
    "hogwild",
    "objective",
    "parallel_adabatch",
    "sgd",
    "signed_labels",
    "svrg",
    "svrg_direction",
    "to_scipy",
]
#: The names that need numpy and scipy (all but the four imported above).
_SOLVER_NAMES = frozenset(__all__) - {
    "AdaBatchEmbeddings",
    "DivergenceError",
    "EmbeddingAggregation",
    "WorkerError",
}

try:
    from . import _numpy_scipy  # noqa: F401  (numpy and scipy, or the ImportError to show)
except ImportError as exc:
    _missing: ImportError | None = exc
else:
    # Eager, not lazy (PEP 562): the submodule `aggregate` would otherwise shadow the function
    # `aggregate` once anything imported it.
    _missing = None
    from .aggregate import AGGREGATION_RULES, aggregate, column_counts
    from .lockfree import hogwild
    from .losses import LOSSES, Loss, full_gradient, objective, signed_labels
    from .parallel import combine_partials, parallel_adabatch
    from .scipy_bridge import to_scipy
    from .sequential import sgd
    from .trace import SolverResult, Trace
    from .variance_reduction import CORRECTIONS, coverage_scaling, svrg, svrg_direction


def __getattr__(name: str) -> Any:
    """Only reached without numpy/scipy: a solver's name raises the ImportError with the fix."""
    if name in _SOLVER_NAMES and _missing is not None:
        raise ImportError(f"adabatch.sparse.{name} is unavailable: {_missing}") from _missing
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
