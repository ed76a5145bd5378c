"""Training across workers that talk rarely: local SGD with an adaptive local batch.

* `LocalSGD`: H local steps per worker, then a synchronisation round that averages the
  parameters (one all-reduce) or takes a DiLoCo outer step (`OuterNesterov`), and sizes the
  common local batch from the workers' pooled per-sample statistics.
* `adabatch.local.averaging`: the pure parts of a round (mean, outer gradient, outer step).
"""

from .averaging import OuterNesterov, mean_of, outer_gradient
from .local_sgd import LocalSGD, WorkerLostError

__all__ = ["LocalSGD", "OuterNesterov", "WorkerLostError", "mean_of", "outer_gradient"]
