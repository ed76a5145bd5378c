"""Derived statistics of a batch's per-sample gradients: pure functions of a `GradStats`.

Notation (``docs/methods.md`` §1): b samples, per-sample gradients gᵢ, ḡ = Σgᵢ/b,
S2 = Σ‖gᵢ‖², pᵢ = ⟨gᵢ, ḡ⟩, P2 = Σpᵢ², Mⱼ = Σᵢ gᵢⱼ². Every function returns a Python float
(or a dict of tensors for per-coordinate quantities) computed in float64, and returns NaN
where the quantity is undefined (fewer than two samples per degree of freedom), so that a
policy can keep its batch size and warn instead of crashing mid-run.

Worked example (the one the tests use): per-sample gradients g₁ = (1, 0), g₂ = (0, 2),
g₃ = (2, 1). Then ḡ = (1, 1), S2 = 1 + 4 + 5 = 10, ‖ḡ‖² = 2, V = (10 − 3·2)/2 = 2,
p = (1, 2, 3), P2 = 14, V_ip = (14 − 3·4)/2 = 1, V_orth = (10 − 14/2)/2 = 1.5, and indeed
V = V_ip/‖ḡ‖² + V_orth = 0.5 + 1.5. Diversity Δ = 10/‖(3, 3)‖² = 10/18.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor

from .._types import INNER_MODES, InnerMode
from .summary import GradStats, sq_norm

__all__ = [
    "INNER_MODES",
    "InnerMode",
    "NoiseEstimate",
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


def _inner_terms(stats: GradStats, who: str, mode: str) -> tuple[float, float, float]:
    """(P2, Σ_c b_c‖ḡ_c‖⁴, Σ_c P2_c/‖ḡ_c‖²) or their per-tensor sums, as Python floats."""
    if mode == "global":
        return _require_inner(stats, who)
    if mode == "layerwise":
        return _require_layer(stats, who)
    raise ValueError(f"{who}: mode must be one of {INNER_MODES}, got {mode!r}")


def _require_layer(stats: GradStats, who: str) -> tuple[float, float, float]:
    q, norm4, ratio = stats.layer_inner_sum, stats.layer_norm4_sum, stats.layer_ratio_sum
    if q is None or norm4 is None or ratio is None:
        raise ValueError(
            f"{who}(mode='layerwise') needs the per-tensor Q_l = Σᵢ⟨gᵢ^(l), ḡ^(l)⟩², but these "
            f"statistics were computed without them; compute them with inner_products=True "
            f"(or pass layer_sq_inner=... to GradStats.from_batch)"
        )
    return float(q), float(norm4), float(ratio)


def _require_inner(stats: GradStats, who: str) -> tuple[float, float, float]:
    if stats.sum_sq_inner is None or stats.group_norm4_sum is None or stats.group_ratio_sum is None:
        raise ValueError(
            f"{who} needs P2 = Σ⟨gᵢ, ḡ⟩², but these statistics were computed without it; "
            f"compute them with inner_products=True"
        )
    return float(stats.sum_sq_inner), float(stats.group_norm4_sum), float(stats.group_ratio_sum)


def mean_sq_norm(stats: GradStats) -> float:
    """‖ḡ‖² = ‖Σᵢ gᵢ‖² / b², the squared norm of the mean gradient (NaN for b = 0)."""
    if stats.num_samples == 0:
        return math.nan
    return float(stats.grad_sum_sq_norm) / float(stats.num_samples) ** 2


def gradient_variance(stats: GradStats) -> float:
    """V = (S2 − b‖ḡ‖²)/(b − 1), the trace of the per-sample gradient sample covariance.

    V = (1/(b−1)) Σᵢ ‖gᵢ − ḡ‖² is unbiased for tr Σ, the trace of the population covariance
    of per-sample gradients. It drives the norm test of Byrd, Chin, Nocedal & Wu (2012)
    "Sample size selection in optimization methods for machine learning" and of AdAdaGrad
    (Lau, Liu & Kolar 2024, arXiv 2402.11215). NaN for b < 2.
    """
    b = stats.num_samples
    if b < 2:
        return math.nan
    return (float(stats.sum_sq_norms) - b * mean_sq_norm(stats)) / (b - 1)


def inner_product_variance(stats: GradStats, *, mode: InnerMode = "global") -> float:
    """V_ip = (P2 − b‖ḡ‖⁴)/(b − 1), the sample variance of pᵢ = ⟨gᵢ, ḡ⟩.

    V_ip = (1/(b−1)) Σᵢ (pᵢ − ‖ḡ‖²)², since the mean of the pᵢ is ‖ḡ‖². It estimates
    v₁‖G‖² with v₁ = uᵀΣu the variance along the gradient direction, and drives the
    inner-product test of Bollapragada, Byrd & Nocedal (2018) "Adaptive sampling strategies
    for stochastic optimization" (T = V_ip/(θ²‖ḡ‖⁴)). For merged statistics of k groups it is
    the pooled within-group variance Σ_c(P2_c − b_c‖ḡ_c‖⁴)/(b − k) (see `GradStats`).
    NaN when b ≤ k.

    ``mode="global"`` (the default) is the definition above. ``mode="layerwise"`` is what the
    AdAdaGrad authors' code (timlautk/AdAdaGrad, ``tests.py``) computes: the variance is taken
    per parameter tensor l, of pᵢ^(l) = ⟨gᵢ^(l), ḡ^(l)⟩ (the slices of gᵢ and ḡ belonging to
    l), and summed over tensors, which drops the covariances between tensors:
    V_ip_lw = Σ_l V_ip^(l) = (Σ_l Q_l − b Σ_l ‖ḡ^(l)‖⁴)/(b − 1) with Q_l = Σᵢ (pᵢ^(l))²,
    pooled over merged groups like the global one (see NOTE [layerwise] in `GradStats`). With
    a single parameter tensor the two modes agree.
    """
    p2, norm4, _ = _inner_terms(stats, "inner_product_variance", mode)
    dof = stats.num_samples - stats.num_groups
    if dof < 1:
        return math.nan
    return (p2 - norm4) / dof


def orthogonal_variance(stats: GradStats, *, mode: InnerMode = "global") -> float:
    """V_orth = (S2 − P2/‖ḡ‖²)/(b − 1), the variance orthogonal to the mean gradient.

    With rᵢ = gᵢ − (pᵢ/‖ḡ‖²) ḡ (which average to 0), V_orth = (1/(b−1)) Σᵢ ‖rᵢ‖². It drives
    the orthogonality test of Bollapragada, Byrd & Nocedal (2018) (T = V_orth/(ν²‖ḡ‖²)), and
    satisfies V = V_ip/‖ḡ‖² + V_orth for one batch. For merged statistics of k groups it is
    (S2 − Σ_c P2_c/‖ḡ_c‖²)/(b − k). NaN when b ≤ k.

    ``mode="global"`` (the default) is the definition above. ``mode="layerwise"`` is what the
    AdAdaGrad authors' code (timlautk/AdAdaGrad, ``tests.py``) computes: per parameter tensor
    l, rᵢ^(l) = gᵢ^(l) − (pᵢ^(l)/‖ḡ^(l)‖²) ḡ^(l) with pᵢ^(l) = ⟨gᵢ^(l), ḡ^(l)⟩, and
    V_orth_lw = Σ_l (1/(b−1)) Σᵢ ‖rᵢ^(l)‖² = (S2 − Σ_l Q_l/‖ḡ^(l)‖²)/(b − 1), dropping the
    covariances between tensors (a tensor with ḡ^(l) = 0 contributes Q_l/‖ḡ^(l)‖² = 0).
    Merged groups pool like the global one. With a single parameter tensor the modes agree.
    """
    _, _, ratio = _inner_terms(stats, "orthogonal_variance", mode)
    dof = stats.num_samples - stats.num_groups
    if dof < 1:
        return math.nan
    return (float(stats.sum_sq_norms) - ratio) / dof


def gradient_diversity(stats: GradStats) -> float:
    """Δ = Σᵢ ‖gᵢ‖² / ‖Σᵢ gᵢ‖² = S2/(b²‖ḡ‖²), the gradient diversity.

    Yin et al. (AISTATS 2018) "Gradient diversity: a key ingredient for scalable distributed
    learning"; DiveBatch (Chen, Wang & Sundaram, arXiv 2509.16173) grows the batch to
    ⌊δ·N·Δ⌋. Lies in [1/b, ∞); returns inf when Σgᵢ = 0 and S2 > 0, NaN when both are 0.
    """
    s2 = float(stats.sum_sq_norms)
    denom = float(stats.grad_sum_sq_norm)
    if denom == 0.0:
        return math.inf if s2 > 0 else math.nan
    return s2 / denom


def noise_scale(stats: GradStats) -> float:
    """Unbiased simple noise scale B_simple = tr Σ / ‖G‖² from one batch.

    McCandlish, Kaplan, Amodei et al. (2018) "An empirical model of large-batch training".
    With V unbiased for tr Σ and E‖ḡ‖² = ‖G‖² + tr Σ / b, the ratio of unbiased estimates is
    B_simple ≈ V / (‖ḡ‖² − V/b). When the estimate of ‖G‖² is ≤ 0 the noise dominates
    the signal and the result is +inf. NaN for b < 2.
    """
    trace, signal = per_sample_estimates(stats)
    if math.isnan(trace):
        return math.nan
    if signal <= 0.0:
        return math.inf
    return trace / signal


def coordinate_variance(stats: GradStats) -> dict[str, Tensor]:
    """Vⱼ = (Mⱼ − b ḡⱼ²)/(b − 1) per coordinate, as float64 tensors shaped like each parameter.

    The per-coordinate sample variance used by the coordinate-wise test proposed for
    AdAdaGrad (Lau, Liu & Kolar 2024); Σⱼ Vⱼ = V. NaN-filled for b < 2.
    """
    if stats.coord_sq_sum is None:
        raise ValueError(
            "coordinate_variance needs Σᵢ gᵢ⊙gᵢ, but these statistics were computed without "
            "it; compute them with coordinates=True"
        )
    b = stats.num_samples
    out: dict[str, Tensor] = {}
    for name, m in stats.coord_sq_sum.items():
        g = stats.grad_sum[name]
        g = g.to_dense() if g.is_sparse else g
        m = m.to_dense() if m.is_sparse else m
        if b < 2:
            out[name] = m.double() * math.nan
        else:
            out[name] = (m.double() - g.double().square() / b) / (b - 1)
    return out


# ---------------------------------------------------------------------- the noise scale's parts
class NoiseEstimate(NamedTuple):
    """Unbiased estimates of tr Σ and ‖G‖² from one batch (McCandlish et al. 2018).

    The gradient noise scale is B_simple = tr Σ / ‖G‖²; the noise-scale policy smooths the
    two estimates separately (a ratio of averages, not an average of ratios). A NamedTuple,
    so ``trace, grad_sq = estimate`` works.
    """

    trace: float
    grad_sq: float


def per_sample_estimates(stats: GradStats) -> NoiseEstimate:
    """(tr Σ̂, ‖G‖²̂) = (V, ‖ḡ‖² − V/b): unbiased, from one batch (NaN for b < 2).

    E‖ḡ‖² = ‖G‖² + tr Σ/b, so subtracting V/b (V unbiased for tr Σ) unbiases ‖ḡ‖².
    """
    v = gradient_variance(stats)
    return NoiseEstimate(v, mean_sq_norm(stats) - v / stats.num_samples)


def two_batch_estimates(
    small_sq_norm: float, small_size: float, big_sq_norm: float, big_size: float
) -> NoiseEstimate:
    """(tr Σ̂, ‖G‖²̂) from ‖G_s‖² at size B_s and ‖G_b‖² at size B_b > B_s (unbiased).

    ‖G‖² ≈ (B_b‖G_b‖² − B_s‖G_s‖²)/(B_b − B_s) and tr Σ ≈ (‖G_s‖² − ‖G_b‖²)/(1/B_s − 1/B_b):
    both solve E‖G_B‖² = ‖G‖² + tr Σ/B at the two sizes, with no per-sample work (McCandlish
    et al. 2018, appendix A).

    With gradient accumulation the two norms cost nothing per sample: after the first
    micro-batch's backward (its mean loss weighted n₁/N), ``p.grad`` holds (n₁/N)·ḡ₁, so
    ‖ḡ₁‖² = Σ‖p.grad‖²·(N/n₁)²; after the last one it holds ḡ, so ‖ḡ‖² = Σ‖p.grad‖²::

        scheduler.observe(two_batch_estimates(first_sq * (N / n1) ** 2, n1, final_sq, N))

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
    return NoiseEstimate(trace, grad_sq)


def parts_estimates(parts: Sequence[GradStats]) -> NoiseEstimate:
    """(tr Σ̂, ‖G‖²̂) from the micro-batches (or ranks' shares) of one batch.

    Uses only each part's Σgᵢ (no S2): with k parts of sizes m_r, the average of their
    ‖ḡ_r‖² has expectation ‖G‖² + tr Σ·mean(1/m_r), so it is the "small" norm at the
    harmonic-mean size; the merged batch's ‖ḡ‖² is the big one. Needs ≥ 2 non-empty parts.
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
