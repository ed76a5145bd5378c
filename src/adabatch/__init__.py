"""adabatch: adaptive batch sizes for PyTorch from exact, cheap per-sample gradient statistics."""

from .data import AdaptiveLoader, ResizableBatchSampler
from .lr_coupling import LR_RULES, LRCoupling
from .policies import POLICIES, make_policy
from .scheduler import BatchSizeScheduler
from .stats import (
    ENGINES,
    GradStats,
    GradStatsTracker,
    StatsWindow,
    compute_stats,
    gradient_diversity,
    gradient_variance,
    inner_product_variance,
    noise_scale,
    orthogonal_variance,
)

__version__ = "0.2.0"

__all__ = [
    "ENGINES",
    "LR_RULES",
    "POLICIES",
    "AdaptiveLoader",
    "BatchSizeScheduler",
    "GradStats",
    "GradStatsTracker",
    "LRCoupling",
    "ResizableBatchSampler",
    "StatsWindow",
    "__version__",
    "compute_stats",
    "gradient_diversity",
    "gradient_variance",
    "inner_product_variance",
    "make_policy",
    "noise_scale",
    "orthogonal_variance",
]
