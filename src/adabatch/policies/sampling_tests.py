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

These are the *global* (exact) forms: V_ip and V_orth use the inner products with the whole
mean gradient. T is ``inf`` when ḡ = 0 with a positive variance and ``nan`` when undefined
(b < 2): the policy decides what to do with a non-finite T.
"""

from __future__ import annotations

import math

from ..stats.estimators import (
    gradient_variance,
    inner_product_variance,
    mean_sq_norm,
    orthogonal_variance,
)
from ..stats.summary import GradStats

__all__ = ["inner_product_test_size", "norm_test_size", "orthogonality_test_size"]


def _check_tolerance(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"{name} must be a positive finite number (the test's relative tolerance, e.g. "
            f"0.1), got {value}"
        )
    return value


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
    eta = _check_tolerance("eta", eta)
    return _ratio(gradient_variance(stats), eta**2 * mean_sq_norm(stats))


def inner_product_test_size(stats: GradStats, *, theta: float) -> float:
    """T = V_ip / (θ²‖ḡ‖⁴): the batch at which the inner-product test passes.

    Needs P2 (``inner_products=True`` in the engine).

    Args:
        stats: one batch's statistics with P2.
        theta: θ > 0, the allowed spread of ⟨gᵢ, ḡ⟩ around ‖ḡ‖².
    """
    theta = _check_tolerance("theta", theta)
    g2 = mean_sq_norm(stats)
    return _ratio(inner_product_variance(stats), theta**2 * g2 * g2)


def orthogonality_test_size(stats: GradStats, *, nu: float) -> float:
    """T = V_orth / (ν²‖ḡ‖²): the batch at which the orthogonality test passes.

    Needs P2 (``inner_products=True`` in the engine).

    Args:
        stats: one batch's statistics with P2.
        nu: ν > 0, the allowed size of the components orthogonal to ḡ.
    """
    nu = _check_tolerance("nu", nu)
    return _ratio(orthogonal_variance(stats), nu**2 * mean_sq_norm(stats))
