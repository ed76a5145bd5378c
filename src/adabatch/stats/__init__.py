"""Exact per-sample gradient statistics: `GradStats`, `compute_stats`, the estimators.

See `adabatch.stats.summary` for the fields, `adabatch.stats.estimators` for the derived
quantities and `adabatch.stats.engines` for the engines.
"""

from .api import compute_stats
from .engines import ENGINES, GradStatsTracker
from .estimators import (
    coordinate_variance,
    gradient_diversity,
    gradient_variance,
    inner_product_variance,
    mean_sq_norm,
    noise_scale,
    orthogonal_variance,
)
from .summary import GradStats

__all__ = [
    "ENGINES",
    "GradStats",
    "GradStatsTracker",
    "compute_stats",
    "coordinate_variance",
    "gradient_diversity",
    "gradient_variance",
    "inner_product_variance",
    "mean_sq_norm",
    "noise_scale",
    "orthogonal_variance",
]
