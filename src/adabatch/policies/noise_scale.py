"""The gradient noise scale policy (McCandlish, Kaplan, Amodei et al. 2018).

B_simple = tr Σ / ‖G‖², with Σ the covariance of per-sample gradients and G the true
gradient, estimates the critical batch size (exactly so for a well-conditioned Hessian).
The policy keeps unbiased estimates of the numerator and of the denominator, smooths each
with its own bias-corrected exponential moving average (the EMA of a ratio would be biased),
and sets the batch to factor · EMA(tr Σ)/EMA(‖G‖²), clamped.

Two ways to get the unbiased estimates (`adabatch.stats.NoiseEstimate`):

* **per-sample** (`adabatch.stats.per_sample_estimates`): from one batch's `GradStats`,
  tr Σ ≈ V and ‖G‖² ≈ ‖ḡ‖² − V/b. The policy reads the tracker's statistics every step.
* **two-batch** (`adabatch.stats.two_batch_estimates`, `parts_estimates`): from the squared
  norms of mean gradients at two sizes, with no per-sample work — micro-batches against the
  whole batch, or the ranks' own gradients under DDP (`adabatch.distributed.RankGradNorms`).
  The loop computes the estimate and hands it over with ``scheduler.observe(estimate)``.
  (gpt-neox and k-diffusion estimate the noise scale this way.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from .._validate import as_int, check_choice, check_positive
from ..stats.estimators import NoiseEstimate, per_sample_estimates
from ..stats.summary import GradStats
from .base import BatchSizePolicy, Cadence, Decision, StatsRequest

__all__ = [
    "ESTIMATORS",
    "EMAState",
    "NoiseScalePolicy",
    "NoiseScaleState",
    "ema_update",
    "ema_value",
]

#: The two ways of estimating tr Σ and ‖G‖² (see the module docstring).
ESTIMATORS = ("per-sample", "two-batch")


class EMAState(NamedTuple):
    """A bias-corrected exponential moving average: m ← βm + (1 − β)x after ``count`` values."""

    mean: float = 0.0
    count: int = 0


def ema_update(state: EMAState, x: float, beta: float) -> EMAState:
    """The average after one more observation ``x``."""
    return EMAState(beta * state.mean + (1.0 - beta) * float(x), state.count + 1)


def ema_value(state: EMAState, beta: float) -> float:
    """m/(1 − βᵗ), the bias-corrected average (NaN before the first observation)."""
    if state.count == 0:
        return math.nan
    return state.mean / (1.0 - beta**state.count)


class NoiseScaleState(NamedTuple):
    """The two moving averages: of tr Σ̂ and of ‖G‖²̂."""

    trace: EMAState = EMAState()
    grad_sq: EMAState = EMAState()


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class NoiseScalePolicy(BatchSizePolicy):
    """Batch = clamp(factor · B_simple), B_simple from separately smoothed estimates.

    Every measured step updates the two moving averages (from the step's `GradStats` for the
    per-sample estimator, from the `NoiseEstimate` the loop observed for the two-batch one);
    after every ``interval``-th step the batch becomes clamp(factor · EMA(tr Σ)/EMA(‖G‖²)). A
    non-positive EMA(‖G‖²) means the noise swamps the signal: the batch goes to the cap.
    By default the batch never shrinks (``monotone``), like the other growing policies.

    Args:
        batch_size: b₀.
        factor: the batch as a multiple of B_simple (1: the critical batch estimate).
        smoothing: β of both moving averages (default 0.99).
        interval: decide every ``interval`` optimizer steps.
        estimator: "per-sample" (reads S2; statistics every step) or "two-batch" (the loop
            observes a `NoiseEstimate` every step; no per-sample statistics).
        monotone: never shrink the batch.
        min_batch_size, max_batch_size, multiple_of, dataset_size: see `BatchSizePolicy`.
    """

    name = "noise-scale"

    factor: float = 1.0
    smoothing: float = 0.99
    interval: int = 10
    estimator: str = "per-sample"
    monotone: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        smoothing = self.smoothing
        if not (isinstance(smoothing, (int, float)) and 0.0 <= smoothing < 1.0):
            raise ValueError(
                f"smoothing (the moving-average factor β) must be in [0, 1), got {smoothing!r}"
            )
        for key, value in (
            ("factor", check_positive("factor", self.factor)),
            ("smoothing", float(smoothing)),
            ("interval", as_int(self.interval, "interval", minimum=1)),
            ("estimator", check_choice("estimator", self.estimator, ESTIMATORS)),
            ("monotone", bool(self.monotone)),
        ):
            object.__setattr__(self, key, value)

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        return StatsRequest(per_sample=self.estimator == "per-sample")

    @property
    def cadence(self) -> Cadence:  # noqa: D102 - see base
        # Consulted after every step: each measured step updates the averages.
        return Cadence("step", every=1, window=1, measure_at_cap=not self.monotone)

    def init(self) -> NoiseScaleState:  # noqa: D102 - see base
        return NoiseScaleState()

    def noise_scale(self, state: NoiseScaleState) -> float:
        """EMA(tr Σ)/EMA(‖G‖²) (inf when the signal estimate is ≤ 0, NaN before data)."""
        trace, grad_sq = (
            ema_value(state.trace, self.smoothing),
            ema_value(state.grad_sq, self.smoothing),
        )
        if math.isnan(trace) or math.isnan(grad_sq):
            return math.nan
        if grad_sq <= 0:
            return math.inf
        return max(trace, 0.0) / grad_sq

    def proposal(self, scale: float, batch_size: int) -> float:
        """The batch the rule asks for at noise scale ``scale``: factor · B_simple."""
        return self.factor * scale

    def update(
        self, state: NoiseScaleState, observation: GradStats | NoiseEstimate
    ) -> tuple[NoiseScaleState, str | None]:
        """The averages after one observation, and why it was skipped (None if it was not)."""
        if isinstance(observation, GradStats):
            if self.estimator != "per-sample":
                raise TypeError(
                    "this noise-scale policy uses the two-batch estimator: observe a "
                    "NoiseEstimate (two_batch_estimates, parts_estimates or "
                    "RankGradNorms.estimates), or build it with estimator='per-sample'"
                )
            if not self.stats_finite(observation) or observation.num_samples < 2:
                return state, "non-finite statistics or a batch of 1; step skipped"
            observation = per_sample_estimates(observation)
        trace, grad_sq = observation
        if not (math.isfinite(trace) and math.isfinite(grad_sq)):
            return state, f"non-finite estimates (tr Σ {trace}, ‖G‖² {grad_sq}); skipped"
        beta = self.smoothing
        return NoiseScaleState(
            ema_update(state.trace, trace, beta), ema_update(state.grad_sq, grad_sq, beta)
        ), None

    def decide(  # noqa: D102 - see BatchSizePolicy.decide
        self,
        state: NoiseScaleState,
        stats: GradStats | NoiseEstimate | None,
        *,
        batch_size: int,
        step: int | None,
        epoch: int,
        samples: int = 0,
    ) -> tuple[NoiseScaleState, Decision | None]:
        skipped = None
        if stats is not None:
            state, skipped = self.update(state, stats)
        assert step is not None  # a step-cadence policy
        if (step + 1) % self.interval or state.trace.count == 0:
            if skipped is None:
                return state, None
            return state, self.keep(
                batch_size=batch_size, step=step, epoch=epoch, statistic="B_simple", why=skipped
            )
        scale = self.noise_scale(state)
        decision = self.grow_to(
            self.proposal(scale, batch_size),
            batch_size=batch_size,
            step=step,
            epoch=epoch,
            statistic="B_simple",
            value=scale,
            monotone=self.monotone,
        )
        if skipped is not None and decision.note is None:  # decided from the earlier steps
            decision = dataclasses.replace(decision, note=f"{self.name} policy: {skipped}")
        return state, decision
