"""DiveBatch's resize rule (Chen, Wang & Sundaram, arXiv 2509.16173), as the authors' code runs it.

Over the measuring window (the epoch before each resize epoch) the trainer accumulates
A = Σᵢ gᵢ and S = Σᵢ ‖gᵢ‖², each gᵢ taken at its own minibatch's parameters. Then

    Δ̂ = S / ‖A‖²                                   (the gradient diversity)
    B' = B_max                          if Δ̂ is NaN or infinite,
    B' = min(max(⌊δ·N·Δ̂⌋, B), B_max)   otherwise,

with N the data set size: the batch never shrinks and never exceeds B_max. The authors' code
adds 1e-10 to ‖A‖²; here ‖A‖² = 0 gives an infinite (or NaN) Δ̂ and thus B_max, which is what
the offset produces for any S > 1e-10·B_max/(δN).
"""

from __future__ import annotations

import math

from .._validate import as_int
from ..stats.estimators import gradient_diversity
from ..stats.summary import GradStats

__all__ = ["divebatch_batch_size", "divebatch_rule"]


def divebatch_rule(
    diversity: float, *, dataset_size: int, delta: float, batch_size: int, max_batch_size: int
) -> int:
    """B' from a diversity Δ̂ (see the module docstring for the formula)."""
    dataset_size = as_int(dataset_size, "dataset_size", minimum=1)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    max_batch_size = as_int(max_batch_size, "max_batch_size", minimum=1)
    delta = float(delta)
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(
            f"delta must be a positive finite number (the papers use 0.01-0.1), got {delta}"
        )
    if max_batch_size < batch_size:
        raise ValueError(
            f"max_batch_size ({max_batch_size}) must be >= batch_size ({batch_size}): DiveBatch "
            "never shrinks the batch"
        )
    if not math.isfinite(diversity):
        return max_batch_size
    return min(max(math.floor(delta * dataset_size * diversity), batch_size), max_batch_size)


def divebatch_batch_size(
    stats: GradStats, *, dataset_size: int, delta: float, batch_size: int, max_batch_size: int
) -> int:
    """DiveBatch's next batch size from the window's accumulated statistics.

    Args:
        stats: Σgᵢ and S2 summed over the measuring window (``stats_a + stats_b + ...``).
        dataset_size: N.
        delta: δ > 0 (CIFAR-10 0.1; CIFAR-100 and Tiny-ImageNet 0.01).
        batch_size: the current B.
        max_batch_size: B_max ≥ B.

    Returns:
        B' = min(max(⌊δ·N·Δ̂⌋, B), B_max), or B_max when Δ̂ = S2/‖Σgᵢ‖² is not finite.
    """
    return divebatch_rule(
        gradient_diversity(stats),
        dataset_size=dataset_size,
        delta=delta,
        batch_size=batch_size,
        max_batch_size=max_batch_size,
    )
