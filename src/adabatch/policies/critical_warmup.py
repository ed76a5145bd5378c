"""Batch-size warm-up from the measured critical batch size (after Merrill et al. 2025).

Merrill, Arora, Groeneveld & Hajishirzi ("Critical batch size revisited", arXiv 2505.23971)
find that the critical batch size (CBS) — the largest batch at which a token budget still
reaches the loss of small batches — starts small and grows with the tokens trained, and they
warm the batch up to follow it: start small and double the batch as the CBS passes the next
size (43 % fewer gradient steps for OLMo 1B at equal loss). They measure the CBS offline,
by branching training from checkpoints at several batch sizes; that probe needs many
branched runs and is not what this policy does.

What this policy measures instead, online and at no extra run: the gradient noise scale
B_simple = tr Σ/‖G‖² (McCandlish et al. 2018), the classic estimate of the critical batch,
from the per-sample statistics (or the two-batch estimator), smoothed exactly as
`NoiseScalePolicy` smooths it. The warm-up rule: every ``interval`` steps, the batch B grows
to B·growth^k for the largest k with B·growth^k ≤ factor·B_simple (k ≥ 0), so it moves in
whole doublings (``growth=2``), as in the paper's schedule, and never shrinks.
"""

from __future__ import annotations

import dataclasses
import math

from .._validate import check_positive
from .noise_scale import NoiseScalePolicy

__all__ = ["CriticalBatchWarmup", "warmup_size"]


def warmup_size(batch_size: int, critical: float, growth: float) -> float:
    """B·growth^k, the largest with k ≥ 0 and B·growth^k ≤ ``critical`` (inf: unbounded).

    Example:
        >>> warmup_size(32, 300.0, 2.0), warmup_size(32, 63.9, 2.0), warmup_size(32, 20.0, 2.0)
        (256.0, 32.0, 32.0)
    """
    if math.isnan(critical) or math.isinf(critical):
        return critical  # undefined statistics keep the batch; inf goes to the cap
    if not critical > batch_size:
        return float(batch_size)
    k = math.floor(math.log(critical / batch_size) / math.log(growth) + 1e-12)
    return float(batch_size * growth**k)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class CriticalBatchWarmup(NoiseScalePolicy):
    """Grow the batch in steps of ``growth`` as the measured critical batch passes them.

    Args:
        growth: the factor of each warm-up step (2: doublings, as Merrill et al.).
        factor, smoothing, interval, estimator: as for `NoiseScalePolicy` (the critical batch
            is factor · B_simple).
        min_batch_size, max_batch_size, multiple_of, dataset_size: see `BatchSizePolicy`.
    """

    name = "critical-batch-warmup"

    growth: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        growth = check_positive("growth", self.growth)
        if growth <= 1:
            raise ValueError(
                f"growth must be > 1 (each warm-up step grows the batch), got {growth}"
            )
        if not self.monotone:
            raise ValueError("a warm-up never shrinks the batch: leave monotone=True")
        object.__setattr__(self, "growth", float(growth))

    def proposal(self, scale: float, batch_size: int) -> float:
        """The largest B·growth^k ≤ factor · B_simple (k ≥ 0): whole warm-up steps."""
        return warmup_size(batch_size, self.factor * scale, self.growth)
