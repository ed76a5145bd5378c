"""AdaBatch (Défossez & Bach, arXiv 1711.01761): per-coordinate aggregation for sparse models.

Instead of averaging a mini-batch's gradients, each coordinate of the summed gradient is divided
by the number of samples in the batch where that feature is non-zero (`aggregate`), at the
single-sample step size: sparse linear models keep SGD's sample efficiency as the batch grows.

* `aggregate`, `column_counts` — the rule; `adabatch.sparse.losses` — logistic and squared
  losses with an explicit L2 term;
* `sgd` — sequential SGD, mini-batch SGD with mean aggregation, mini-batch AdaBatch;
* `parallel_adabatch` — synchronous data-parallel AdaBatch over worker processes (partial sums
  and counts, added, then divided); `hogwild` — the lock-free asynchronous baseline;
* `svrg` — mini-batch SVRG with AdaBatch aggregation of the variance-reduced term;
* `EmbeddingAggregation`, `AdaBatchEmbeddings` — the same rule for the rows of ``nn.Embedding``
  tables in deep networks.

``benchmarks/sparse_adabatch.py`` runs the comparison; BENCHMARKS.md has its tables.
"""

try:
    import numpy  # noqa: F401
    import scipy.sparse  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"adabatch.sparse needs numpy and scipy ({exc.name} is missing): "
        'pip install "adabatch[sparse]"'
    ) from exc

from .aggregate import RULES, aggregate, column_counts
from .data import to_scipy
from .embedding import AdaBatchEmbeddings, EmbeddingAggregation
from .lockfree import hogwild
from .losses import LOSSES, Loss, full_gradient, objective, signed_labels
from .parallel import WorkerError, combine_partials, parallel_adabatch
from .sequential import DivergenceError, sgd
from .trace import SolverResult, Trace
from .variance_reduction import CORRECTIONS, coverage_scaling, svrg, svrg_direction

__all__ = [
    "CORRECTIONS",
    "LOSSES",
    "RULES",
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
