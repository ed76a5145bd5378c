"""Exact per-sample gradient statistics: `GradStats`, `compute_stats`, the estimators.

See `adabatch.stats.summary` for the fields, `adabatch.stats.estimators` for the derived
quantities, `adabatch.stats.window` for the running sum between two decisions and
`adabatch.stats.engines` for the engines.
"""

from .api import compute_stats
from .engines import ENGINES, GradStatsTracker
from .estimators import (
    NoiseEstimate,
    coordinate_variance,
    gradient_diversity,
    gradient_variance,
    inner_product_variance,
    mean_sq_norm,
    noise_scale,
    orthogonal_variance,
    parts_estimates,
    per_sample_estimates,
    two_batch_estimates,
)
from .summary import GradStats
from .window import StatsWindow

__all__ = [
    "ENGINES",
    "GradStats",
    "GradStatsTracker",
    "NoiseEstimate",
    "StatsWindow",
    "compute_stats",
    "coordinate_variance",
    "gradient_diversity",
    "gradient_variance",
    "inner_product_variance",
    "mean_sq_norm",
    "noise_scale",
    "orthogonal_variance",
    "parts_estimates",
    "per_sample_estimates",
    "two_batch_estimates",
]
