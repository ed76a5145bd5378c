"""Adaptive-sampling tests: the batch size each test asks for, before rounding and clamping.

Each test compares a sample variance of the per-sample gradients with the squared size of the
mean gradient ḡ and returns T, the batch size at which the test would just pass; a policy then
sets b ← min(b_max, max(b, ⌈T⌉)). With V, V_ip, V_orth the estimators of `adabatch.stats`:

=============  ================================  ==================================
test           sample condition                  T
=============  ================================  ==================================
norm           V/b ≤ η²‖ḡ‖²                      V / (η²‖ḡ‖²)
inner product  V_ip/b ≤ θ²‖ḡ‖⁴                   V_ip / (θ²‖ḡ‖⁴)
orthogonality  V_orth/b ≤ ν²‖ḡ‖²                 V_orth / (ν²‖ḡ‖²)
=============  ================================  ==================================

Norm test: Byrd, Chin, Nocedal & Wu (2012), "Sample size selection in optimization methods
for machine learning"; inner-product and orthogonality tests: Bollapragada, Byrd & Nocedal
(2018), "Adaptive sampling strategies for stochastic optimization"; their use with AdaGrad
updates: Lau, Liu & Kolar, "AdAdaGrad" (arXiv 2402.11215).

``mode="global"`` (the default of these functions) is the definition: V_ip and V_orth use the
inner products with the whole mean gradient. ``mode="layerwise"`` is what the AdAdaGrad
authors' code computes (timlautk/AdAdaGrad ``tests.py``): the variances are taken per
parameter tensor against that tensor's slice of ḡ and summed, which drops the covariances
between tensors; the denominators keep the global ‖ḡ‖². The policies default to
``"layerwise"`` so that they reproduce the authors' runs. The norm test has one form (V is a
sum over coordinates either way).

The coordinate-wise test (proposed with AdAdaGrad; not in the authors' code) asks
V_j/b ≤ η²ḡ_j² for every coordinate j. A coordinate whose mean gradient is near zero would
ask for an unbounded batch, so adabatch guards it (its own choice, documented in
`coordinate_norm_test_size`).

T is ``inf`` when ḡ = 0 with a positive variance and ``nan`` when undefined (b < 2): the
policy decides what to do with a non-finite T.
"""

from __future__ import annotations

import math

import torch

from .._types import INNER_MODES
from .._validate import check_choice, check_positive
from ..stats.estimators import (
    coordinate_variance,
    gradient_variance,
    inner_product_variance,
    mean_sq_norm,
    orthogonal_variance,
)
from ..stats.summary import GradStats

__all__ = [
    "augmented_test_size",
    "coordinate_norm_test_size",
    "espath_split",
    "inner_product_test_size",
    "norm_test_size",
    "orthogonality_test_size",
]

_TOLERANCE = " (the test's relative tolerance, e.g. 0.1)"


def _ratio(variance: float, scale: float) -> float:
    """variance/scale with the conventions above (both non-negative in exact arithmetic)."""
    if math.isnan(variance) or math.isnan(scale):
        return math.nan
    if scale <= 0.0:
        return math.inf if variance > 0 else math.nan
    return max(variance, 0.0) / scale  # a rounding-negative variance asks for nothing


def norm_test_size(stats: GradStats, *, eta: float) -> float:
    """T = V / (η²‖ḡ‖²): the batch at which the norm test V/b ≤ η²‖ḡ‖² passes.

    Args:
        stats: one batch's statistics (S2 and Σgᵢ).
        eta: η > 0, the allowed relative error of the mean gradient's norm.
    """
    eta = check_positive("eta", eta, hint=_TOLERANCE)
    return _ratio(gradient_variance(stats), eta**2 * mean_sq_norm(stats))


def inner_product_test_size(stats: GradStats, *, theta: float, mode: str = "global") -> float:
    """T = V_ip / (θ²‖ḡ‖⁴): the batch at which the inner-product test passes.

    Needs P2 (``inner_products=True`` in the engine).

    Args:
        stats: one batch's statistics with P2.
        theta: θ > 0, the allowed spread of ⟨gᵢ, ḡ⟩ around ‖ḡ‖².
        mode: "global" (the definition) or "layerwise" (the authors' code), see above.
    """
    theta = check_positive("theta", theta, hint=_TOLERANCE)
    mode = check_choice("mode", mode, INNER_MODES)
    g2 = mean_sq_norm(stats)
    return _ratio(inner_product_variance(stats, mode=mode), theta**2 * g2 * g2)


def orthogonality_test_size(stats: GradStats, *, nu: float, mode: str = "global") -> float:
    """T = V_orth / (ν²‖ḡ‖²): the batch at which the orthogonality test passes.

    Needs P2 (``inner_products=True`` in the engine).

    Args:
        stats: one batch's statistics with P2.
        nu: ν > 0, the allowed size of the components orthogonal to ḡ.
        mode: "global" (the definition) or "layerwise" (the authors' code), see above.
    """
    nu = check_positive("nu", nu, hint=_TOLERANCE)
    mode = check_choice("mode", mode, INNER_MODES)
    return _ratio(orthogonal_variance(stats, mode=mode), nu**2 * mean_sq_norm(stats))


def augmented_test_size(
    stats: GradStats, *, theta: float, nu: float, mode: str = "global"
) -> float:
    """T = max(T_ip, T_orth): the augmented inner-product test (Bollapragada et al. 2018).

    Both conditions must hold, so the batch must reach the larger of the two sizes (NaN if
    either is NaN).
    """
    t_ip = inner_product_test_size(stats, theta=theta, mode=mode)
    t_orth = orthogonality_test_size(stats, nu=nu, mode=mode)
    if math.isnan(t_ip) or math.isnan(t_orth):
        return math.nan
    return max(t_ip, t_orth)


def espath_split(epsilon: float, rho: float) -> tuple[float, float]:
    """(θ, ν) with θ² = ε²ρ and ν² = ε²(1 − ρ), so that θ² + ν² = ε².

    Espath, Krumscheid, Tempone & Vilanova (arXiv 2109.10933): the augmented test with
    θ² + ν² = ε² gives the same SGD rate as the norm test with tolerance ε. The sizes are
    b_ip = v₁/(θ²‖G‖²) and b_orth = v₂/(ν²‖G‖²) with v₁ + v₂ = tr Σ, and
    max(b_ip, b_orth) ≥ tr Σ/(ε²‖G‖²), with equality iff ρ = v₁/tr Σ.

    Args:
        epsilon: ε > 0, the norm test's tolerance.
        rho: the share ρ ∈ (0, 1) of ε² given to the inner-product test.
    """
    epsilon = check_positive("epsilon", epsilon, hint=_TOLERANCE)
    rho = float(rho)
    if not 0.0 < rho < 1.0:
        raise ValueError(f"the split rho must be in (0, 1), got {rho}")
    return epsilon * math.sqrt(rho), epsilon * math.sqrt(1.0 - rho)


def coordinate_norm_test_size(
    stats: GradStats, *, eta: float, floor: float = 0.1, quantile: float = 1.0
) -> float:
    """T = q-quantile over coordinates j of V_j / (η² (ḡ_j² + κ‖ḡ‖²/P)).

    The coordinate-wise test V_j/b ≤ η²ḡ_j² for all j (proposed for AdAdaGrad, Lau, Liu &
    Kolar, arXiv 2402.11215; its exact form in the paper is unconfirmed and the authors' code
    does not implement it) asks for max_j V_j/(η²ḡ_j²), which is unbounded when some ḡ_j ≈ 0.
    adabatch's guard adds κ times the mean squared coordinate ‖ḡ‖²/P to each denominator:
    a coordinate with no signal then asks for at most V_j·P/(η²κ‖ḡ‖²), which for evenly
    spread noise (V_j = V/P) is the norm test's size divided by κ. Coordinates with V_j = 0
    ask for nothing. ``floor=0, quantile=1`` is the unguarded test (``inf`` on a coordinate
    with ḡ_j = 0 and V_j > 0).

    Args:
        stats: one batch's statistics with Σgᵢ⊙gᵢ (``coordinates=True`` in the engine).
        eta: η > 0.
        floor: κ ≥ 0, the guard (adabatch's default 0.1).
        quantile: q ∈ (0, 1], which quantile of the per-coordinate sizes to take (1: the max).
    """
    eta = check_positive("eta", eta, hint=_TOLERANCE)
    floor = float(floor)
    if not (floor >= 0 and math.isfinite(floor)):
        raise ValueError(f"floor must be a finite number >= 0, got {floor}")
    quantile = float(quantile)
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    variances = coordinate_variance(stats)
    if stats.num_samples < 2:
        return math.nan
    b = stats.num_samples
    numel = sum(v.numel() for v in variances.values())
    shift = floor * mean_sq_norm(stats) / max(numel, 1)
    sizes = []
    for name, v in variances.items():
        g = stats.grad_sum[name]
        g = (g.to_dense() if g.is_sparse else g).double() / b
        denom = eta**2 * (g.square() + shift)
        v = v.clamp_min(0.0)  # rounding-negative variances ask for nothing
        t = torch.where(v == 0, torch.zeros_like(v), v / denom)  # v/0 → inf; NaN stays NaN
        sizes.append(t.reshape(-1))
    if not sizes:
        return math.nan
    flat = torch.cat(sizes)
    if quantile == 1.0:
        return float(flat.max())
    k = max(1, math.ceil(quantile * flat.numel()))
    return float(torch.kthvalue(flat.cpu(), k).values)
