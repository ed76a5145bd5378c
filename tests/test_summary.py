"""GradStats: construction, merging rules and round trips."""

from __future__ import annotations

import pytest
import torch

from adabatch.stats import GradStats, NoiseEstimate, StatsWindow


def make(b: int = 3, inner: bool = True, coords: bool = True, names=("w", "b")) -> GradStats:
    g = torch.arange(1.0, 1.0 + 2 * b, dtype=torch.float64).view(b, 2)
    return GradStats.from_batch(
        b,
        {n: g.sum(0) for n in names},
        torch.tensor(5.0),
        torch.tensor(7.0) if inner else None,
        {n: (g * g).sum(0) for n in names} if coords else None,
        {n: torch.tensor(3.0 + k) for k, n in enumerate(names)} if inner else None,
    )


def test_from_batch_rejects_empty_batches() -> None:
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        GradStats.from_batch(0, {}, torch.tensor(0.0))


def test_scalars_are_float64() -> None:
    s = GradStats.from_batch(
        2, {"w": torch.ones(3)}, torch.tensor(1.0, dtype=torch.float32), torch.tensor(2.0)
    )
    assert s.sum_sq_norms.dtype == torch.float64 and s.sum_sq_inner.dtype == torch.float64


def test_addition_and_sum() -> None:
    a, b = make(3), make(2)
    c = a + b
    assert c.num_samples == 5 and c.num_groups == 2
    assert float(c.sum_sq_norms) == 10.0 and float(c.sum_sq_inner) == 14.0
    torch.testing.assert_close(c.grad_sum["w"], a.grad_sum["w"] + b.grad_sum["w"])
    d = sum([a, b, make(1)])
    assert isinstance(d, GradStats) and d.num_samples == 6 and d.num_groups == 3


def test_cannot_add_mismatched_statistics() -> None:
    with pytest.raises(ValueError, match="grad_sum keys differ"):
        make(names=("w",)) + make(names=("v",))
    with pytest.raises(ValueError, match="inner_products"):
        make(inner=True) + make(inner=False)
    with pytest.raises(ValueError, match="coordinates"):
        make(coords=True) + make(coords=False)


def test_state_dict_round_trip_and_copies() -> None:
    s = make()
    t = GradStats.from_state_dict(s.state_dict())
    assert t.num_samples == s.num_samples and torch.equal(t.grad_sum["w"], s.grad_sum["w"])
    with pytest.raises(ValueError, match="unknown GradStats fields"):
        GradStats.from_state_dict({**s.state_dict(), "bogus": 1})
    moved = s.to("cpu")
    assert moved.sum_sq_inner is not None and moved.coord_sq_sum is not None
    assert torch.equal(moved.coord_sq_sum["b"], s.coord_sq_sum["b"])
    c = s.detach_copy()
    c.grad_sum["w"].zero_()
    assert s.grad_sum["w"].abs().sum() > 0
    assert "num_samples=3" in repr(s)


def test_empty_is_the_neutral_element() -> None:
    from adabatch.stats import gradient_diversity, gradient_variance, mean_sq_norm

    s = make()
    params = {n: torch.empty_like(t) for n, t in s.grad_sum.items()}
    e = GradStats.empty(params, inner_products=True, coordinates=True)
    assert e.num_samples == 0 and e.num_groups == 0
    t = e + s
    assert t.num_samples == s.num_samples and t.num_groups == s.num_groups
    assert torch.equal(t.grad_sum["w"], s.grad_sum["w"])
    assert float(t.sum_sq_inner) == float(s.sum_sq_inner)
    assert gradient_variance(t) == gradient_variance(s)
    assert mean_sq_norm(e) != mean_sq_norm(e)  # NaN
    assert gradient_diversity(e) != gradient_diversity(e)


def test_cached_grad_sum_norm_matches_a_fresh_computation():
    from adabatch.stats.summary import sq_norm

    g = {"a": torch.randn(3, 2, dtype=torch.float64), "b": torch.randn(4, dtype=torch.float64)}
    seeded = GradStats.from_batch(
        5, g, torch.tensor(9.0), sum_sq_inner=torch.tensor(2.0)
    )  # from_batch seeds the cache from its own pass
    lazy = GradStats.from_batch(5, g, torch.tensor(9.0))
    expected = float(sq_norm(g))
    assert float(seeded.grad_sum_sq_norm) == expected == float(lazy.grad_sum_sq_norm)
    merged = seeded + seeded  # a new summary: its own value, not a copied cache
    assert float(merged.grad_sum_sq_norm) == pytest.approx(4 * expected)


def test_window_sum_equals_add_and_sums_into_its_own_tensors() -> None:
    torch.manual_seed(1)
    a, b, c = make(3), make(4), make(2)
    expected = a + b + c
    inputs = {"a": a, "b": b, "c": c}
    before = {n: {k: v.clone() for k, v in s.grad_sum.items()} for n, s in inputs.items()}
    window = StatsWindow()
    window.add(a)
    window.add(b)
    owned = {k: v.data_ptr() for k, v in window.state_dict()["value"]["grad_sum"].items()}
    window.add(c)
    total = window.pop()
    assert window.empty and window.pop() is None
    for f in ("num_samples", "num_groups"):
        assert getattr(total, f) == getattr(expected, f)
    for f in ("sum_sq_norms", "sum_sq_inner", "group_norm4_sum", "group_ratio_sum"):
        assert torch.equal(getattr(total, f), getattr(expected, f))
    for field in ("grad_sum", "coord_sq_sum"):
        for k in expected.grad_sum:
            assert torch.equal(getattr(total, field)[k], getattr(expected, field)[k])
    # The third summary was summed in place into the window's own buffers (one allocation
    # per window), and no summary handed to the window was modified.
    assert {k: v.data_ptr() for k, v in total.grad_sum.items()} == owned
    for name, stats in inputs.items():
        assert all(torch.equal(stats.grad_sum[k], before[name][k]) for k in before[name])


def test_window_holds_a_single_summary_by_reference_and_refuses_mixing() -> None:
    a = make(3)
    window = StatsWindow()
    window.add(a)
    assert window.pop() is a  # one step's statistics: no copy
    window.add(NoiseEstimate(1.0, 2.0))
    with pytest.raises(ValueError, match="only GradStats add up"):
        window.add(a)
