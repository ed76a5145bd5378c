"""The derived statistics against values computed by hand from explicit per-sample gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adabatch.stats import (
    GradStats,
    coordinate_variance,
    gradient_diversity,
    gradient_variance,
    inner_product_variance,
    mean_sq_norm,
    noise_scale,
    orthogonal_variance,
)


def stats_of(per_sample: torch.Tensor, split: int | None = None) -> GradStats:
    """GradStats of explicit per-sample gradients (b, P), split into two params at `split`."""
    g = per_sample.double()
    split = split if split is not None else g.shape[1] // 2
    parts = {"a": g[:, :split], "b": g[:, split:]}
    mean = g.mean(0)
    p = g @ mean
    return GradStats.from_batch(
        g.shape[0],
        {k: v.sum(0) for k, v in parts.items()},
        (g * g).sum(),
        (p * p).sum(),
        {k: (v * v).sum(0) for k, v in parts.items()},
    )


def test_worked_example_from_the_docstring() -> None:
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]])
    s = stats_of(g, split=1)
    assert float(s.sum_sq_norms) == 10.0
    assert float(s.sum_sq_inner) == 14.0
    assert mean_sq_norm(s) == pytest.approx(2.0)
    assert gradient_variance(s) == pytest.approx(2.0)
    assert inner_product_variance(s) == pytest.approx(1.0)
    assert orthogonal_variance(s) == pytest.approx(1.5)
    assert gradient_diversity(s) == pytest.approx(10.0 / 18.0)
    # B_simple = V / (‖ḡ‖² − V/b) = 2 / (2 − 2/3)
    assert noise_scale(s) == pytest.approx(1.5)
    cv = coordinate_variance(s)
    assert float(cv["a"][0]) == pytest.approx(1.0)  # var(1, 0, 2)
    assert float(cv["b"][0]) == pytest.approx(1.0)  # var(0, 2, 1)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(min_value=2, max_value=9),
    p=st.integers(min_value=2, max_value=6),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    offset=st.floats(min_value=-3.0, max_value=3.0),
)
def test_definitions_on_random_gradients(b: int, p: int, seed: int, offset: float) -> None:
    g = (
        torch.randn(b, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        + offset
    )
    s = stats_of(g)
    mean = g.mean(0)
    m2 = float(mean @ mean)
    # V: trace of the unbiased sample covariance.
    v = float(torch.var(g, dim=0, unbiased=True).sum())
    assert gradient_variance(s) == pytest.approx(v, rel=1e-9, abs=1e-12)
    # V_ip: unbiased sample variance of the projections pᵢ = ⟨gᵢ, ḡ⟩.
    proj = g @ mean
    assert inner_product_variance(s) == pytest.approx(
        float(proj.var(unbiased=True)), rel=1e-9, abs=1e-12
    )
    # V_orth: (1/(b−1)) Σ ‖gᵢ − (pᵢ/‖ḡ‖²) ḡ‖².
    resid = g - torch.outer(proj / m2, mean)
    v_orth = float((resid * resid).sum()) / (b - 1)
    assert orthogonal_variance(s) == pytest.approx(v_orth, rel=1e-8, abs=1e-10)
    # The identity V = V_ip/‖ḡ‖² + V_orth.
    assert gradient_variance(s) == pytest.approx(
        inner_product_variance(s) / m2 + orthogonal_variance(s), rel=1e-8, abs=1e-10
    )
    # Diversity and the unbiased simple noise scale from their definitions.
    total = g.sum(0)
    assert gradient_diversity(s) == pytest.approx(float((g * g).sum() / (total @ total)), rel=1e-9)
    signal = m2 - v / b
    expected_bs = v / signal if signal > 0 else math.inf
    assert noise_scale(s) == pytest.approx(expected_bs, rel=1e-7)
    cv = coordinate_variance(s)
    torch.testing.assert_close(
        torch.cat([cv["a"], cv["b"]]), torch.var(g, dim=0), rtol=1e-9, atol=1e-12
    )


def test_merged_statistics_pool_within_groups() -> None:
    gen = torch.Generator().manual_seed(3)
    g1 = torch.randn(4, 5, generator=gen, dtype=torch.float64) + 1.0
    g2 = torch.randn(6, 5, generator=gen, dtype=torch.float64) - 0.5
    merged = stats_of(g1) + stats_of(g2)
    union = torch.cat([g1, g2])
    assert merged.num_samples == 10 and merged.num_groups == 2
    # Additive fields: exactly those of the union.
    assert gradient_variance(merged) == pytest.approx(
        float(torch.var(union, dim=0).sum()), rel=1e-9
    )
    # P2-based fields: pooled within-group variances with b − k degrees of freedom.
    ss_ip = sum(float(((g @ g.mean(0)) - g.mean(0) @ g.mean(0)).pow(2).sum()) for g in (g1, g2))
    assert inner_product_variance(merged) == pytest.approx(ss_ip / 8, rel=1e-9)
    ss_orth = 0.0
    for g in (g1, g2):
        m = g.mean(0)
        r = g - torch.outer((g @ m) / (m @ m), m)
        ss_orth += float((r * r).sum())
    assert orthogonal_variance(merged) == pytest.approx(ss_orth / 8, rel=1e-9)


def test_undefined_values_are_nan_not_errors() -> None:
    one = stats_of(torch.tensor([[1.0, 2.0]]))
    assert math.isnan(gradient_variance(one))
    assert math.isnan(inner_product_variance(one))
    assert math.isnan(orthogonal_variance(one))
    assert math.isnan(noise_scale(one))
    assert torch.isnan(coordinate_variance(one)["a"]).all()
    zero = stats_of(torch.zeros(3, 2))
    assert math.isnan(gradient_diversity(zero))
    assert orthogonal_variance(zero) == 0.0  # ḡ = 0: the ratio term is defined as 0
    cancel = stats_of(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert gradient_diversity(cancel) == math.inf
    assert noise_scale(cancel) == math.inf  # the unbiased ‖G‖² estimate is negative


def test_missing_optional_fields_raise_with_the_fix() -> None:
    g = torch.randn(3, 4, dtype=torch.float64)
    s = GradStats.from_batch(3, {"w": g.sum(0)}, (g * g).sum())
    with pytest.raises(ValueError, match="inner_products=True"):
        inner_product_variance(s)
    with pytest.raises(ValueError, match="inner_products=True"):
        orthogonal_variance(s)
    with pytest.raises(ValueError, match="coordinates=True"):
        coordinate_variance(s)
