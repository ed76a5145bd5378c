"""Noise-scale estimators: unbiased on linear regression with known Σ and G (Monte Carlo).

Least squares ℓᵢ(w) = ½(xᵢᵀw − yᵢ)² with xᵢ ~ N(0, I_d), yᵢ = xᵢᵀw* + εᵢ, εᵢ ~ N(0, σ²).
With u = w − w*: gᵢ = xᵢ(xᵢᵀu − εᵢ), so G = E gᵢ = u and, by Isserlis' theorem,
E gᵢgᵢᵀ = ‖u‖²I + 2uuᵀ + σ²I, hence Σ = (‖u‖² + σ²)I + uuᵀ and

    tr Σ = (d + 1)‖u‖² + dσ²,     ‖G‖² = ‖u‖².
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

from _streams import scheduler_for
from adabatch.policies import NoiseScalePolicy, ema_value
from adabatch.stats import (
    GradStatsTracker,
    NoiseEstimate,
    mean_sq_norm,
    parts_estimates,
    per_sample_estimates,
    two_batch_estimates,
)

D, SIGMA = 4, 0.7
U = torch.tensor([0.5, -1.0, 0.25, 0.75], dtype=torch.float64)
TRACE = (D + 1) * float(U @ U) + D * SIGMA**2
GRAD_SQ = float(U @ U)


def draw(b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(b, D, generator=gen, dtype=torch.float64)
    y = x @ torch.zeros(D, dtype=torch.float64) + SIGMA * torch.randn(
        b, generator=gen, dtype=torch.float64
    )
    return x, y  # w* = 0, so the model's weight is u


def model_at_u() -> nn.Linear:
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(U.unsqueeze(0))
    return model


def loss_fn(model, x, y):
    return 0.5 * ((model(x).squeeze(1) - y) ** 2).mean()


def within(samples: list[float], truth: float, sigmas: float = 4.0) -> bool:
    """|mean − truth| within `sigmas` standard errors."""
    mean = statistics.fmean(samples)
    se = statistics.stdev(samples) / math.sqrt(len(samples))
    return abs(mean - truth) <= sigmas * se


def monte_carlo(draws: int = 1500, b: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = model_at_u()
    tracker = GradStatsTracker(model, loss_reduction="mean")
    out = {"per_sample": [], "parts": [], "naive_g2": []}
    for _ in range(draws):
        x, y = draw(b, gen)
        parts = []
        for half in (slice(0, b // 2), slice(b // 2, b)):  # two micro-batches
            model.zero_grad()
            loss_fn(model, x[half], y[half]).backward()
            parts.append(tracker.pop())
        whole = parts[0] + parts[1]
        out["per_sample"].append(per_sample_estimates(whole))
        out["parts"].append(parts_estimates(parts))
        out["naive_g2"].append(mean_sq_norm(whole))
    tracker.remove()
    return out


@pytest.fixture(scope="module")
def estimates():
    return monte_carlo()


@pytest.mark.parametrize("route", ["per_sample", "parts"])
def test_estimators_are_unbiased(estimates, route):
    traces = [t for t, _ in estimates[route]]
    grads = [g for _, g in estimates[route]]
    assert within(traces, TRACE), (statistics.fmean(traces), TRACE)
    assert within(grads, GRAD_SQ), (statistics.fmean(grads), GRAD_SQ)


def test_the_check_detects_a_biased_estimator(estimates):
    # ‖ḡ‖² overestimates ‖G‖² by tr Σ/b: the same check must reject it.
    assert not within(estimates["naive_g2"], GRAD_SQ)


def test_smoothed_noise_scale_converges_to_b_simple(estimates):
    policy = NoiseScalePolicy(8, smoothing=0.999, interval=1)
    state = policy.init()
    for estimate in estimates["per_sample"]:
        state, skipped = policy.update(state, estimate)
        assert skipped is None
    assert policy.noise_scale(state) == pytest.approx(TRACE / GRAD_SQ, rel=0.1)


def test_two_batch_formula_by_hand():
    # E‖G_B‖² = ‖G‖² + tr Σ/B: feed exact expectations, get exact values back.
    small, big = GRAD_SQ + TRACE / 4, GRAD_SQ + TRACE / 32
    trace, grad_sq = two_batch_estimates(small, 4, big, 32)
    assert trace == pytest.approx(TRACE) and grad_sq == pytest.approx(GRAD_SQ)
    with pytest.raises(ValueError, match="0 < small_size < big_size"):
        two_batch_estimates(1.0, 8, 1.0, 8)


def test_parts_need_two_non_empty_parts():
    model = model_at_u()
    with GradStatsTracker(model) as tracker:
        x, y = draw(4, torch.Generator().manual_seed(0))
        loss_fn(model, x, y).backward()
        one = tracker.pop()
    with pytest.raises(ValueError, match="at least 2 non-empty parts, got 1"):
        parts_estimates([one])


def test_policy_decides_every_interval_from_the_ratio_of_averages():
    policy = NoiseScalePolicy(4, factor=2.0, smoothing=0.5, interval=3, max_batch_size=1000)
    feed = [(10.0, 1.0), (30.0, 2.0), (20.0, 1.0)]
    state = policy.init()
    for step, (trace, grad_sq) in enumerate(feed):
        estimate = NoiseEstimate(trace, grad_sq)
        state, d = policy.decide(state, estimate, batch_size=4, step=step, epoch=0)
        assert (d is None) == (step < 2)
    # Both averages weigh the three points 0.25, 0.5, 1 (normalised alike): the ratio is
    # (2.5 + 15 + 20)/(0.25 + 1 + 1) = 16.67, times the factor 2.
    assert d.value == pytest.approx(37.5 / 2.25)
    assert d.new_batch_size == math.ceil(2 * 37.5 / 2.25)


def test_non_positive_signal_goes_to_the_cap_and_monotone_holds():
    policy = NoiseScalePolicy(16, interval=1, max_batch_size=64)
    _, d = policy.decide(policy.init(), NoiseEstimate(5.0, -1.0), batch_size=16, step=0, epoch=0)
    assert d.new_batch_size == 64
    shrinking = NoiseScalePolicy(16, interval=1, smoothing=0.0, monotone=False)
    estimate = NoiseEstimate(4.0, 1.0)
    _, d = shrinking.decide(shrinking.init(), estimate, batch_size=16, step=0, epoch=0)
    assert d.new_batch_size == 4


def test_two_batch_policy_refuses_per_sample_statistics():
    policy = NoiseScalePolicy(8, estimator="two-batch")
    assert not policy.stats_request.per_sample
    model = model_at_u()
    x, y = draw(8, torch.Generator().manual_seed(0))
    sched = scheduler_for(policy)
    with GradStatsTracker(model) as tracker:
        with sched.measure(tracker):  # the tracker is paused: nothing per sample is computed
            loss_fn(model, x, y).backward()
        assert tracker.num_passes == 0
        loss_fn(model, x, y).backward()
        stats = tracker.pop()
    sched.observe(stats)
    with pytest.raises(TypeError, match="two-batch estimator"):
        sched.step()


def test_observe_parts_feeds_the_two_batch_estimates():
    gen = torch.Generator().manual_seed(3)
    model = model_at_u()
    parts = []
    with GradStatsTracker(model) as tracker:
        for size in (4, 4, 6):
            x, y = draw(size, gen)
            model.zero_grad()
            loss_fn(model, x, y).backward()
            parts.append(tracker.pop())
    policy = NoiseScalePolicy(8, estimator="two-batch", smoothing=0.0, interval=1)
    state, _ = policy.update(policy.init(), parts_estimates(parts))
    trace, grad_sq = parts_estimates(parts)
    assert policy.noise_scale(state) == pytest.approx(trace / grad_sq)
    # By hand: the small norm is the parts' mean ‖ḡ_r‖² at the harmonic-mean size 4.5.
    small = sum(mean_sq_norm(p) for p in parts) / 3
    big = mean_sq_norm(parts[0] + parts[1] + parts[2])
    assert (trace, grad_sq) == pytest.approx(two_batch_estimates(small, 4.5, big, 14))


def test_observe_norms_from_accumulated_grads_needs_no_per_sample_work():
    """The documented recipe: ‖ḡ₁‖² from the first micro-batch's p.grad, ‖ḡ‖² from the last."""
    gen = torch.Generator().manual_seed(4)
    x, y = draw(12, gen)
    model = model_at_u()
    chunks = [slice(0, 4), slice(4, 12)]
    first_sq = None
    for chunk in chunks:
        n = chunk.stop - chunk.start
        (loss_fn(model, x[chunk], y[chunk]) * (n / 12)).backward()
        if first_sq is None:
            first_sq = float(model.weight.grad.pow(2).sum())
    final_sq = float(model.weight.grad.pow(2).sum())
    policy = NoiseScalePolicy(8, estimator="two-batch", smoothing=0.0)
    state, _ = policy.update(
        policy.init(), two_batch_estimates(first_sq * (12 / 4) ** 2, 4, final_sq, 12)
    )
    # The same two norms from explicit per-sample gradients gᵢ = xᵢ(xᵢᵀu − yᵢ):
    g = x * (x @ U - y).unsqueeze(1)
    small, big = float(g[:4].mean(0).pow(2).sum()), float(g.mean(0).pow(2).sum())
    trace, grad_sq = two_batch_estimates(small, 4, big, 12)
    assert ema_value(state.trace, policy.smoothing) == pytest.approx(trace, rel=1e-9)
    assert ema_value(state.grad_sq, policy.smoothing) == pytest.approx(grad_sq, rel=1e-9)
