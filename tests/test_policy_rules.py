"""The decision rules of issue 4 against values computed from explicit per-sample gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adabatch.policies import (
    divebatch_batch_size,
    divebatch_rule,
    inner_product_test_size,
    norm_test_size,
    orthogonality_test_size,
)
from adabatch.stats import GradStats


def stats_of(g: torch.Tensor) -> GradStats:
    """GradStats of explicit per-sample gradients g (b × P), split over two 'parameters'."""
    mean = g.mean(0)
    return GradStats.from_batch(
        g.shape[0],
        {"a": g[:, :2].sum(0), "b": g[:, 2:].sum(0)},
        (g * g).sum(),
        sum_sq_inner=((g @ mean) ** 2).sum(),
    )


def by_hand(g: torch.Tensor) -> dict[str, float]:
    """The tests' sample quantities from their definitions (deviations, not the S2 formulas)."""
    b = g.shape[0]
    mean = g.mean(0)
    g2 = float(mean @ mean)
    p = g @ mean  # ⟨gᵢ, ḡ⟩
    residual = g - torch.outer(p / g2, mean)  # gᵢ minus its component along ḡ
    return {
        "g2": g2,
        "V": float(((g - mean) ** 2).sum() / (b - 1)),
        "V_ip": float(((p - g2) ** 2).sum() / (b - 1)),
        "V_orth": float((residual**2).sum() / (b - 1)),
    }


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(2, 12),
    seed=st.integers(0, 10_000),
    shift=st.floats(0.0, 3.0),
    tol=st.floats(0.01, 2.0),
)
def test_suggested_sizes_match_the_definitions(b, seed, shift, tol):
    g = torch.randn(b, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = g + shift  # a mean gradient of varying size relative to the noise
    s, h = stats_of(g), by_hand(g)
    assert norm_test_size(s, eta=tol) == pytest.approx(h["V"] / (tol**2 * h["g2"]), rel=1e-9)
    assert inner_product_test_size(s, theta=tol) == pytest.approx(
        h["V_ip"] / (tol**2 * h["g2"] ** 2), rel=1e-7, abs=1e-9
    )
    assert orthogonality_test_size(s, nu=tol) == pytest.approx(
        h["V_orth"] / (tol**2 * h["g2"]), rel=1e-7, abs=1e-9
    )
    # V = V_ip/‖ḡ‖² + V_orth, so with equal tolerances T_norm = T_ip + T_orth.
    t = norm_test_size(s, eta=tol)
    t_ip = inner_product_test_size(s, theta=tol)
    t_orth = orthogonality_test_size(s, nu=tol)
    assert t == pytest.approx(t_ip + t_orth, rel=1e-7, abs=1e-9)


def test_a_hand_computed_batch():
    # g1 = (1, 0), g2 = (3, 2): ḡ = (2, 1), ‖ḡ‖² = 5, V = ((1+1) + (1+1))/1 = 4
    g = torch.tensor([[1.0, 0.0, 0.0], [3.0, 2.0, 0.0]], dtype=torch.float64)
    s = stats_of(g)
    assert norm_test_size(s, eta=0.5) == pytest.approx(4 / (0.25 * 5))
    # p = (2, 8): V_ip = (9 + 9)/1 = 18, T_ip = 18/(θ²·25)
    assert inner_product_test_size(s, theta=0.5) == pytest.approx(18 / (0.25 * 25))
    # V_orth = V − V_ip/‖ḡ‖² = 4 − 18/5 = 0.4
    assert orthogonality_test_size(s, nu=0.5) == pytest.approx(0.4 / (0.25 * 5))


def test_non_finite_cases():
    zero_mean = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    assert norm_test_size(stats_of(zero_mean), eta=0.1) == math.inf
    one = stats_of(torch.ones(1, 3, dtype=torch.float64))
    assert math.isnan(norm_test_size(one, eta=0.1))  # b = 1: no variance


@pytest.mark.parametrize("fn", [norm_test_size, inner_product_test_size, orthogonality_test_size])
@pytest.mark.parametrize("bad", [0.0, -0.1, math.inf, math.nan])
def test_tolerances_must_be_positive(fn, bad):
    name = {"norm_test_size": "eta", "inner_product_test_size": "theta"}.get(fn.__name__, "nu")
    s = stats_of(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=f"{name} must be a positive finite number"):
        fn(s, **{name: bad})


def test_inner_product_tests_need_p2():
    s = GradStats.from_batch(2, {"a": torch.ones(3)}, torch.tensor(4.0))
    with pytest.raises(ValueError, match="inner"):
        inner_product_test_size(s, theta=0.1)


# ---------------------------------------------------------------------------------- DiveBatch
def authors_update(s2: float, a2: float, *, n: int, delta: float, b: int, b_max: int) -> int:
    """A line-by-line transcription of the authors' trainer (with its 1e-10 offset)."""
    diversity = s2 / (a2 + 1e-10)
    if math.isnan(diversity) or math.isinf(diversity):
        return b_max
    return min(max(int(delta * n * diversity), b), b_max)


@settings(max_examples=200, deadline=None)
@given(
    s2=st.floats(1e-3, 1e6),
    a2=st.floats(1e-3, 1e6),
    n=st.integers(1, 100_000),
    delta=st.sampled_from([0.005, 0.01, 0.1]),
    b=st.integers(1, 512),
    extra=st.integers(0, 4096),
)
def test_divebatch_rule_matches_the_authors_update(s2, a2, n, delta, b, extra):
    ours = divebatch_rule(
        s2 / a2, dataset_size=n, delta=delta, batch_size=b, max_batch_size=b + extra
    )
    theirs = authors_update(s2, a2, n=n, delta=delta, b=b, b_max=b + extra)
    # The 1e-10 offset can move ⌊δNΔ⌋ down by one at an exact integer boundary.
    assert ours == theirs or (ours - theirs == 1 and ours <= b + extra)


def test_divebatch_from_accumulated_statistics():
    g = torch.randn(40, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
    window = stats_of(g[:16]) + stats_of(g[16:])  # two batches of one epoch
    diversity = float((g * g).sum() / (g.sum(0) ** 2).sum())
    expected = min(max(math.floor(0.1 * 1000 * diversity), 32), 512)
    got = divebatch_batch_size(
        window, dataset_size=1000, delta=0.1, batch_size=32, max_batch_size=512
    )
    assert got == expected and 32 <= got <= 512
    zero = GradStats.from_batch(2, {"a": torch.zeros(2)}, torch.tensor(1.0))
    assert (
        divebatch_batch_size(zero, dataset_size=10, delta=0.1, batch_size=2, max_batch_size=8) == 8
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(delta=-0.1), ValueError, "delta must be a positive finite number"),
        (dict(max_batch_size=4), ValueError, r"max_batch_size \(4\) must be >= batch_size \(8\)"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (dict(dataset_size=2.5), TypeError, "dataset_size must be an integer"),
    ],
)
def test_divebatch_bad_configuration(kwargs, error, match):
    args = dict(dataset_size=100, delta=0.1, batch_size=8, max_batch_size=64) | kwargs
    with pytest.raises(error, match=match):
        divebatch_rule(1.0, **args)
