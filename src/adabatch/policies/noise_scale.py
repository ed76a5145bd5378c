"""The gradient noise scale policy (McCandlish, Kaplan, Amodei et al. 2018).

B_simple = tr Σ / ‖G‖², with Σ the covariance of per-sample gradients and G the true
gradient, estimates the critical batch size (exactly so for a well-conditioned Hessian).
The policy keeps unbiased estimates of the numerator and of the denominator, smooths each
with its own bias-corrected exponential moving average (the EMA of a ratio would be biased),
and sets the batch to factor · EMA(tr Σ)/EMA(‖G‖²), clamped.

Two ways to get unbiased estimates:

* **per-sample** (`per_sample_estimates`): from one batch's `GradStats`, tr Σ ≈ V and
  ‖G‖² ≈ ‖ḡ‖² − V/b, since E‖ḡ‖² = ‖G‖² + tr Σ/b.
* **two-batch** (`two_batch_estimates`): from the squared norms of mean gradients at two
  sizes B_s < B_b, with no per-sample work — micro-batches (or per-rank gradients) against
  the whole batch:

      ‖G‖² ≈ (B_b‖G_b‖² − B_s‖G_s‖²)/(B_b − B_s),    tr Σ ≈ (‖G_s‖² − ‖G_b‖²)/(1/B_s − 1/B_b).

  With k parts of sizes m_r, the average of their ‖ḡ_r‖² has expectation ‖G‖² + tr Σ·
  mean(1/m_r), so it is the "small" norm at the harmonic-mean size (`parts_estimates`).
  Under DDP the ranks' own gradients are the parts: `RankGradNorms` (a communication hook)
  gives the estimates without any per-sample statistics. (gpt-neox and k-diffusion estimate
  the noise scale this way.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from .._validate import as_int, check_choice, check_positive
from ..stats.estimators import gradient_variance, mean_sq_norm
from ..stats.summary import GradStats, sq_norm
from .base import BatchSizePolicy, Bounds, Decision, StatsRequest

__all__ = [
    "EMA",
    "NoiseScalePolicy",
    "parts_estimates",
    "per_sample_estimates",
    "two_batch_estimates",
]


def per_sample_estimates(stats: GradStats) -> tuple[float, float]:
    """(tr Σ̂, ‖G‖²̂) = (V, ‖ḡ‖² − V/b): unbiased, from one batch (NaN for b < 2)."""
    v = gradient_variance(stats)
    return v, mean_sq_norm(stats) - v / stats.num_samples


def two_batch_estimates(
    small_sq_norm: float, small_size: float, big_sq_norm: float, big_size: float
) -> tuple[float, float]:
    """(tr Σ̂, ‖G‖²̂) from ‖G_s‖² at size B_s and ‖G_b‖² at size B_b > B_s (unbiased).

    Args:
        small_sq_norm: ‖G_s‖², the squared norm of a mean gradient over B_s samples (or the
            average of several such norms).
        small_size: B_s.
        big_sq_norm: ‖G_b‖², over B_b samples.
        big_size: B_b > B_s.
    """
    small_size, big_size = float(small_size), float(big_size)
    if not 0 < small_size < big_size:
        raise ValueError(
            f"the two-batch estimator needs 0 < small_size < big_size, got small_size="
            f"{small_size}, big_size={big_size}"
        )
    grad_sq = (big_size * big_sq_norm - small_size * small_sq_norm) / (big_size - small_size)
    trace = (small_sq_norm - big_sq_norm) / (1.0 / small_size - 1.0 / big_size)
    return trace, grad_sq


def parts_estimates(parts: Sequence[GradStats]) -> tuple[float, float]:
    """(tr Σ̂, ‖G‖²̂) from the micro-batches (or ranks' shares) of one batch.

    Uses only each part's Σgᵢ (no S2): the parts' average ‖ḡ_r‖² is the small norm at the
    harmonic-mean size, the merged batch's ‖ḡ‖² the big one. Needs ≥ 2 non-empty parts.
    """
    parts = [p for p in parts if p.num_samples > 0]
    if len(parts) < 2:
        raise ValueError(
            f"the two-batch estimator needs at least 2 non-empty parts, got {len(parts)}"
        )
    small = sum(mean_sq_norm(p) for p in parts) / len(parts)
    harmonic = len(parts) / sum(1.0 / p.num_samples for p in parts)
    total = sum(p.num_samples for p in parts)
    big_sum = {k: sum(p.grad_sum[k] for p in parts) for k in parts[0].grad_sum}
    big = float(sq_norm(big_sum)) / total**2  # type: ignore[arg-type]
    return two_batch_estimates(small, harmonic, big, total)


class EMA:
    """A bias-corrected exponential moving average: m ← βm + (1 − β)x, value m/(1 − βᵗ)."""

    def __init__(self, beta: float) -> None:
        if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
            raise ValueError(
                f"smoothing (the moving-average factor β) must be in [0, 1), got {beta!r}"
            )
        beta = float(beta)
        self.beta = beta
        self.mean = 0.0
        self.count = 0

    def update(self, x: float) -> None:
        """Add one observation."""
        self.mean = self.beta * self.mean + (1.0 - self.beta) * float(x)
        self.count += 1

    @property
    def value(self) -> float:
        """The bias-corrected average (NaN before the first observation)."""
        if self.count == 0:
            return math.nan
        return self.mean / (1.0 - self.beta**self.count)

    def state_dict(self) -> dict[str, Any]:
        """Plain floats for checkpoints."""
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of `state_dict`."""
        self.mean = float(state["mean"])
        self.count = as_int(state["count"], "count", minimum=0)


ESTIMATORS = ("per-sample", "two-batch")


class NoiseScalePolicy(BatchSizePolicy):
    """Batch = clamp(factor · B_simple), B_simple from separately smoothed estimates.

    Every measured step updates the two moving averages (`observe` with a `GradStats` for
    the per-sample estimator; `observe_norms`, `observe_parts` or `observe_estimates` (e.g.
    with `RankGradNorms.estimates` under DDP) for the two-batch one);
    every ``interval`` steps the batch becomes clamp(factor · EMA(tr Σ)/EMA(‖G‖²)). A
    non-positive EMA(‖G‖²) means the noise swamps the signal: the batch goes to the cap.
    By default the batch never shrinks (``monotone``), like the other growing policies.

    Args:
        batch_size: b₀.
        factor: the batch as a multiple of B_simple (1: the critical batch estimate).
        smoothing: β of both moving averages (default 0.99).
        interval: decide every ``interval`` optimizer steps.
        estimator: "per-sample" (reads S2; statistics every step) or "two-batch" (feed
            `observe_norms` or `observe_parts` yourself; no per-sample statistics).
        monotone: never shrink the batch.
        **bounds: min_batch_size, max_batch_size, multiple_of, dataset_size (`Bounds`).
    """

    name = "noise-scale"

    def __init__(
        self,
        batch_size: int,
        *,
        factor: float = 1.0,
        smoothing: float = 0.99,
        interval: int = 10,
        estimator: str = "per-sample",
        monotone: bool = True,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, **bounds)
        self.factor = check_positive("factor", factor)
        self.interval = as_int(interval, "interval", minimum=1)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.monotone = bool(monotone)
        self.trace = EMA(smoothing)
        self.grad_sq = EMA(smoothing)
        self._config = {
            "factor": self.factor,
            "smoothing": self.trace.beta,
            "interval": self.interval,
            "estimator": self.estimator,
            "monotone": self.monotone,
        }

    @property
    def stats_request(self) -> StatsRequest:  # noqa: D102 - see base
        per_sample = self.estimator == "per-sample"
        return StatsRequest(per_sample=per_sample, from_caller=not per_sample)

    @property
    def cadence(self) -> str:  # noqa: D102 - see base
        return "step"

    @property
    def noise_scale(self) -> float:
        """EMA(tr Σ)/EMA(‖G‖²) now (inf when the signal estimate is ≤ 0, NaN before data)."""
        trace, grad_sq = self.trace.value, self.grad_sq.value
        if math.isnan(trace) or math.isnan(grad_sq):
            return math.nan
        if grad_sq <= 0:
            return math.inf
        return max(trace, 0.0) / grad_sq

    def wants_stats(self, *, step: int, epoch: int) -> bool:  # noqa: D102 - see base
        return self.estimator == "per-sample" and not (self.monotone and self.at_max)

    def observe(self, stats: GradStats) -> None:
        """Update the averages from one batch's per-sample statistics."""
        if self.estimator != "per-sample":
            raise RuntimeError(
                "this noise-scale policy uses the two-batch estimator: feed observe_norms() "
                "or observe_parts(), or build it with estimator='per-sample'"
            )
        if not self.stats_finite(stats) or stats.num_samples < 2:
            self.warn_once("non-finite statistics or a batch of 1; step skipped")
            return
        self.observe_estimates(*per_sample_estimates(stats))

    def observe_parts(self, parts: Sequence[GradStats]) -> None:
        """Update the averages from a batch's micro-batches or ranks (two-batch estimator)."""
        self.observe_estimates(*parts_estimates(parts))

    def observe_norms(
        self, small_sq_norm: float, small_size: float, big_sq_norm: float, big_size: float
    ) -> None:
        """Update the averages from two mean-gradient norms (`two_batch_estimates`).

        The no-per-sample route with gradient accumulation: after the first micro-batch's
        backward (loss weighted n₁/N), ``p.grad`` holds (n₁/N)·ḡ₁, so
        ‖ḡ₁‖² = Σ‖p.grad‖²·(N/n₁)²; after the last one it holds ḡ, so ‖ḡ‖² = Σ‖p.grad‖²::

            policy.observe_norms(first_sq * (N / n1) ** 2, n1, final_sq, N)
        """
        self.observe_estimates(
            *two_batch_estimates(small_sq_norm, small_size, big_sq_norm, big_size)
        )

    def observe_estimates(self, trace: float, grad_sq: float) -> None:
        """Update the averages with unbiased estimates of tr Σ and ‖G‖²."""
        if not (math.isfinite(trace) and math.isfinite(grad_sq)):
            self.warn_once(f"non-finite estimates (tr Σ {trace}, ‖G‖² {grad_sq}); skipped")
            return
        self.trace.update(trace)
        self.grad_sq.update(grad_sq)

    def after_step(self, *, step: int, epoch: int) -> Decision | None:  # noqa: D102
        if (step + 1) % self.interval or self.trace.count == 0:
            return None
        scale = self.noise_scale
        return self.grow_to(
            self.factor * scale,
            step=step,
            epoch=epoch,
            statistic="B_simple",
            value=scale,
            monotone=self.monotone,
        )

    def _extra_state(self) -> dict[str, Any]:
        return {"trace": self.trace.state_dict(), "grad_sq": self.grad_sq.state_dict()}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.trace.load_state_dict(state["trace"])
        self.grad_sq.load_state_dict(state["grad_sq"])
