"""adabatch: adaptive batch sizes for PyTorch from exact, cheap per-sample gradient statistics."""

from .data import AdaptiveLoader
from .policies import POLICIES, make_policy
from .scheduler import BatchSizeScheduler
from .stats import (
    ENGINES,
    GradStats,
    GradStatsTracker,
    compute_stats,
    gradient_diversity,
    gradient_variance,
    inner_product_variance,
    noise_scale,
    orthogonal_variance,
)

__version__ = "0.1.0"

__all__ = [
    "ENGINES",
    "POLICIES",
    "AdaptiveLoader",
    "BatchSizeScheduler",
    "GradStats",
    "GradStatsTracker",
    "__version__",
    "compute_stats",
    "gradient_diversity",
    "gradient_variance",
    "inner_product_variance",
    "make_policy",
    "noise_scale",
    "orthogonal_variance",
]
