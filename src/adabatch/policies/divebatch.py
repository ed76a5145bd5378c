"""DiveBatch's resize rule (Chen, Wang & Sundaram, arXiv 2509.16173), as the authors' code runs it.

Over the measuring window (the epoch before each resize epoch) the trainer accumulates
A = Σᵢ gᵢ and S = Σᵢ ‖gᵢ‖², each gᵢ taken at its own minibatch's parameters. Then

    Δ̂ = S / ‖A‖²                                   (the gradient diversity)
    B' = B_max                          if Δ̂ is NaN or infinite,
    B' = min(max(⌊δ·N·Δ̂⌋, B), B_max)   otherwise,

with N the data set size: the batch never shrinks and never exceeds B_max. The authors' code
adds 1e-10 to ‖A‖²; here ‖A‖² = 0 with S > 0 gives an infinite Δ̂ and thus B_max, which is
what the offset produces for any S > 1e-10·B_max/(δN), and S = 0 (every gradient zero) gives
Δ̂ = 0, so B stays, as 0/(0 + 1e-10) does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .._validate import as_int, as_optional_int, check_positive
from ..stats.estimators import gradient_diversity
from ..stats.summary import GradStats
from .base import BatchSizePolicy, Cadence, Decision, StatsRequest

_DELTA_HINT = " (the papers use 0.01-0.1)"

__all__ = ["DiveBatchPolicy", "divebatch_batch_size", "divebatch_rule", "window_diversity"]


def divebatch_rule(
    diversity: float, *, dataset_size: int, delta: float, batch_size: int, max_batch_size: int
) -> int:
    """B' from a diversity Δ̂ (see the module docstring for the formula)."""
    dataset_size = as_int(dataset_size, "dataset_size", minimum=1)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    max_batch_size = as_int(max_batch_size, "max_batch_size", minimum=1)
    delta = check_positive("delta", delta, hint=_DELTA_HINT)
    if max_batch_size < batch_size:
        raise ValueError(
            f"max_batch_size ({max_batch_size}) must be >= batch_size ({batch_size}): DiveBatch "
            "never shrinks the batch"
        )
    if not math.isfinite(diversity):
        return max_batch_size
    return min(max(math.floor(delta * dataset_size * diversity), batch_size), max_batch_size)


def window_diversity(stats: GradStats) -> float:
    """Δ̂ = S/‖A‖² of a window, with S = 0 giving 0 (keep B) as the authors' 0/(0 + 1e-10)."""
    if float(stats.sum_sq_norms) == 0.0:
        return 0.0
    return gradient_diversity(stats)


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
        window_diversity(stats),
        dataset_size=dataset_size,
        delta=delta,
        batch_size=batch_size,
        max_batch_size=max_batch_size,
    )


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class DiveBatchPolicy(BatchSizePolicy):
    """DiveBatch: grow the batch with the gradient diversity of the epoch before.

    The default is the authors' schedule: every ``every`` epochs (R), the statistics of the
    whole epoch before the resize are summed — Σgᵢ and S2, each gᵢ at its own minibatch's
    parameters — and at its end B' = min(max(⌊δ·N·Δ̂⌋, B), B_max) (`divebatch_rule`). No
    statistics are computed in the other epochs, nor once B = B_max. The paper's variant with
    LR scaling (each resize multiplies the LR by B'/B for good, i.e. lr ∝ B/B₀) is the
    scheduler's ``lr_rule="linear"``; the abstract's speed-ups are without it.

    The step-window variant (``every_steps=K``) decides after every K optimizer steps from
    the last ``window_steps`` steps (default all K); N is still the data set size.

    Args:
        batch_size: B₀ (CIFAR 128, Tiny-ImageNet 256).
        dataset_size: N.
        max_batch_size: B_max (the papers use 2048).
        delta: δ (CIFAR-10 0.1; CIFAR-100 and Tiny-ImageNet 0.01).
        every: R, in epochs (the papers use 20; the authors' CLI default is 10).
        every_steps: decide every K steps instead of every R epochs.
        window_steps: how many of those K steps to measure (1 ≤ W ≤ K, default K).
        min_batch_size, multiple_of: see `BatchSizePolicy`.
    """

    name = "divebatch"

    dataset_size: int = dataclasses.field()  # type: ignore[assignment]
    max_batch_size: int = dataclasses.field()  # type: ignore[assignment]
    delta: float = 0.1
    every: int = 20
    every_steps: int | None = None
    window_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        delta = check_positive("delta", self.delta, hint=_DELTA_HINT)
        every = as_int(self.every, "every", minimum=1)
        every_steps = as_optional_int(self.every_steps, "every_steps", minimum=1)
        window_steps = self.window_steps
        if every_steps is None:
            if window_steps is not None:
                raise ValueError("window_steps needs every_steps (the step-window variant)")
        else:
            window_steps = as_int(
                every_steps if window_steps is None else window_steps, "window_steps", minimum=1
            )
            if window_steps > every_steps:
                raise ValueError(
                    f"window_steps ({window_steps}) must be <= every_steps ({every_steps})"
                )
        for key, value in (
            ("delta", delta),
            ("every", every),
            ("every_steps", every_steps),
            ("window_steps", window_steps),
        ):
            object.__setattr__(self, key, value)

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        return StatsRequest(per_sample=True)

    @property
    def cadence(self) -> Cadence:  # noqa: D102 - see base
        if self.every_steps is None:  # the epoch before every R-th epoch end
            return Cadence("epoch", every=self.every, offset=self.every - 1, window=1)
        assert self.window_steps is not None  # the last W of every K steps
        k = self.every_steps
        return Cadence("step", every=k, offset=k - 1, window=self.window_steps)

    def decide(  # noqa: D102 - see BatchSizePolicy.decide
        self,
        state: Any,
        stats: GradStats | None,
        *,
        batch_size: int,
        step: int | None,
        epoch: int,
        samples: int = 0,
    ) -> tuple[Any, Decision | None]:
        if stats is None or stats.num_samples == 0:
            return state, None  # nothing measured (the batch is at its cap)
        if not self.stats_finite(stats):
            return state, self.keep(
                batch_size=batch_size,
                step=step,
                epoch=epoch,
                statistic="diversity",
                why="non-finite statistics",
            )
        diversity = window_diversity(stats)
        new = divebatch_rule(
            diversity,
            dataset_size=self.dataset_size,
            delta=self.delta,
            batch_size=batch_size,
            max_batch_size=int(self.cap),
        )
        new = self.clamp(new) if new > batch_size else batch_size
        return state, Decision(
            step=step,
            epoch=epoch,
            old_batch_size=batch_size,
            new_batch_size=new,
            statistic="diversity",
            value=diversity,
            suggested=self.delta * self.dataset_size * diversity,
        )
