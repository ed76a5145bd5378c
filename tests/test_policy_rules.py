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


# ------------------------------------------------------------------ augmented, coordinate
def test_augmented_is_the_larger_of_the_two():
    from adabatch.policies import augmented_test_size

    g = torch.randn(9, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.4
    s = stats_of(g)
    t = augmented_test_size(s, theta=0.3, nu=0.7)
    assert t == max(inner_product_test_size(s, theta=0.3), orthogonality_test_size(s, nu=0.7))


def test_espath_split_and_equivalence():
    from adabatch.policies import espath_split

    theta, nu = espath_split(0.5, 0.2)
    assert theta**2 + nu**2 == pytest.approx(0.25) and theta**2 == pytest.approx(0.05)
    # With ρ = (V_ip/‖ḡ‖²)/V from the batch itself, both tests ask exactly the norm test's T.
    g = torch.randn(11, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.3
    s, h = stats_of(g), by_hand(g)
    theta, nu = espath_split(0.5, (h["V_ip"] / h["g2"]) / h["V"])
    t_norm = norm_test_size(s, eta=0.5)
    assert inner_product_test_size(s, theta=theta) == pytest.approx(t_norm, rel=1e-9)
    assert orthogonality_test_size(s, nu=nu) == pytest.approx(t_norm, rel=1e-9)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=r"rho must be in \(0, 1\)"):
            espath_split(0.5, bad)


def coordinate_by_hand(per_sample: dict[str, torch.Tensor], eta, floor, quantile) -> float:
    """max/quantile over j of V_j/(η²(ḡ_j² + κ‖ḡ‖²/P)), from torch.var of explicit grads."""
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in per_sample.values()], dim=1)
    var = flat.var(0, correction=1)
    mean = flat.mean(0)
    shift = floor * float(mean @ mean) / flat.shape[1]
    sizes = []
    for v, m in zip(var.tolist(), mean.tolist(), strict=True):
        denom = eta**2 * (m * m + shift)
        sizes.append(0.0 if v == 0 else (math.inf if denom == 0 else v / denom))
    sizes.sort()
    return sizes[max(1, math.ceil(quantile * len(sizes))) - 1]


@pytest.mark.parametrize("floor", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("quantile", [1.0, 0.9, 0.5])
def test_coordinate_test_matches_the_definition(floor, quantile):
    from _streams import per_sample_gradients
    from _streams import stats_of as stream_stats
    from adabatch.policies import coordinate_norm_test_size

    grads = per_sample_gradients(12, 4, seed=9)
    got = coordinate_norm_test_size(stream_stats(grads), eta=0.2, floor=floor, quantile=quantile)
    assert got == pytest.approx(coordinate_by_hand(grads, 0.2, floor, quantile), rel=1e-9)


def test_coordinate_test_guard():
    from adabatch.policies import coordinate_norm_test_size

    # Coordinate 2 has mean 0 and noise; coordinate 3 is always 0.
    g = torch.tensor([[1.0, 1.0, 0.0], [2.0, -1.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    s = GradStats.from_batch(3, {"a": g.sum(0)}, (g * g).sum(), coord_sq_sum={"a": (g * g).sum(0)})
    assert coordinate_norm_test_size(s, eta=0.5, floor=0.0) == math.inf  # the bare test
    guarded = coordinate_norm_test_size(s, eta=0.5, floor=0.3)
    # ‖ḡ‖² = 4, P = 3: the shift is 0.3·4/3 = 0.4; coordinate 2 has V = 1.
    assert guarded == pytest.approx(1.0 / (0.25 * 0.4))
    # The guarded test never asks for less than every coordinate's own ratio with the shift.
    assert guarded >= 1.0 / (0.25 * (4.0 + 0.4))
    with pytest.raises(ValueError, match="coordinates=True"):
        coordinate_norm_test_size(stats_of(g), eta=0.5)
    with pytest.raises(ValueError, match="floor must be a finite number >= 0"):
        coordinate_norm_test_size(s, eta=0.5, floor=-1.0)


def test_layerwise_mode_matches_the_authors_per_tensor_computation():
    """AdAdaGrad's tests.py: torch.var per tensor, summed; denominators use the global ‖ḡ‖²."""
    from _streams import per_sample_gradients
    from _streams import stats_of as stream_stats

    grads = per_sample_gradients(10, 2, seed=11)
    g2 = sum(float(t.mean(0).pow(2).sum()) for t in grads.values())
    v_ip = v_orth = 0.0
    for t in grads.values():
        flat = t.reshape(t.shape[0], -1)
        mean = flat.mean(0)
        inner = flat @ mean
        v_ip += float(inner.var(correction=1))
        ortho = flat - torch.outer(inner, mean) / float(mean @ mean)
        v_orth += float(ortho.var(0, correction=1).sum())
    s = stream_stats(grads)
    assert inner_product_test_size(s, theta=0.3, mode="layerwise") == pytest.approx(
        v_ip / (0.09 * g2 * g2), rel=1e-9
    )
    assert orthogonality_test_size(s, nu=0.3, mode="layerwise") == pytest.approx(
        v_orth / (0.09 * g2), rel=1e-9
    )
    with pytest.raises(ValueError, match="'global', 'layerwise'; got 'per-layer'"):
        inner_product_test_size(s, theta=0.3, mode="per-layer")
