"""The "layerwise" inner-product statistics: per parameter tensor, as timlautk/AdAdaGrad computes.

Checked against a direct transcription of the AdAdaGrad per-tensor computation on explicit
per-sample gradients, rule by rule against materialised per-sample gradients, engine against
engine, and through merging.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

from _compare import assert_stats_close, close
from _models import CASES, SmallCNN, loss_for
from adabatch.stats import (
    GradStats,
    GradStatsTracker,
    compute_stats,
    inner_product_variance,
    orthogonal_variance,
)
from adabatch.stats.engines._dense import stats_from_per_sample
from adabatch.stats.rules import LayerCall, Need
from adabatch.stats.rules.conv import ConvRule
from adabatch.stats.rules.embedding import EmbeddingRule
from adabatch.stats.rules.linear import LinearRule

LAYER_FIELDS = ("layer_inner_sum", "layer_norm4_sum", "layer_ratio_sum")


def adadagrad_layerwise(per_sample: dict[str, Tensor]) -> tuple[float, float]:
    """(V_ip, V_orth) as timlautk/AdAdaGrad's tests.py computes them: per tensor, summed."""
    v_ip = v_orth = 0.0
    for g in per_sample.values():
        b = g.shape[0]
        flat = g.reshape(b, -1)
        mean = flat.mean(0)
        p = flat @ mean  # pᵢ^(l) = ⟨gᵢ^(l), ḡ^(l)⟩
        r = flat - torch.outer(p, mean) / (mean @ mean)
        v_ip += float(torch.var(p, correction=1))
        v_orth += float(torch.var(r, dim=0, correction=1).sum())
    return v_ip, v_orth


def random_per_sample(b: int, seed: int, shapes=((3, 4), (4,), (2, 2, 3))) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        f"p{k}": torch.randn(b, *shape, generator=gen, dtype=torch.float64) + 0.7 * (k - 1)
        for k, shape in enumerate(shapes)
    }


# ---------------------------------------------------------------- definitions


@pytest.mark.parametrize("b", [2, 3, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layerwise_matches_the_adadagrad_transcription(b: int, seed: int) -> None:
    per_sample = random_per_sample(b, seed)
    stats = stats_from_per_sample(per_sample, b, inner_products=True, coordinates=False)
    v_ip, v_orth = adadagrad_layerwise(per_sample)
    assert inner_product_variance(stats, mode="layerwise") == pytest.approx(v_ip, rel=1e-9)
    assert orthogonal_variance(stats, mode="layerwise") == pytest.approx(v_orth, rel=1e-9)
    # The same through GradStats.from_batch with Q_l given by hand.
    q = {
        n: ((g.reshape(b, -1) @ g.reshape(b, -1).mean(0)) ** 2).sum() for n, g in per_sample.items()
    }
    flat = torch.cat([g.reshape(b, -1) for g in per_sample.values()], 1)
    by_hand = GradStats.from_batch(
        b,
        {n: g.sum(0) for n, g in per_sample.items()},
        (flat * flat).sum(),
        ((flat @ flat.mean(0)) ** 2).sum(),
        layer_sq_inner=q,
    )
    assert inner_product_variance(by_hand, mode="layerwise") == pytest.approx(v_ip, rel=1e-9)
    assert orthogonal_variance(by_hand, mode="layerwise") == pytest.approx(v_orth, rel=1e-9)
    # Layerwise drops the covariances between tensors: not the global value.
    assert inner_product_variance(stats, mode="layerwise") != pytest.approx(
        inner_product_variance(stats), rel=1e-3
    )


def test_default_mode_is_global() -> None:
    stats = stats_from_per_sample(random_per_sample(5, 3), 5, True, False)
    assert inner_product_variance(stats) == inner_product_variance(stats, mode="global")
    assert orthogonal_variance(stats) == orthogonal_variance(stats, mode="global")


def test_worked_example_per_tensor() -> None:
    """g₁ = (1 | 0), g₂ = (0 | 2), g₃ = (2 | 1) split into two one-coordinate tensors."""
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    stats = stats_from_per_sample({"a": g[:, :1], "b": g[:, 1:]}, 3, True, False)
    # Tensor a: ḡ = 1, p = (1, 0, 2), var = 1; tensor b: ḡ = 1, p = (0, 2, 1), var = 1.
    assert inner_product_variance(stats, mode="layerwise") == pytest.approx(2.0)
    # One coordinate per tensor: every gᵢ^(l) lies along ḡ^(l), so nothing is orthogonal.
    assert orthogonal_variance(stats, mode="layerwise") == pytest.approx(0.0, abs=1e-12)
    # Global (estimators.py docstring): V_ip = 1, V_orth = 1.5.
    assert inner_product_variance(stats) == pytest.approx(1.0)
    assert orthogonal_variance(stats) == pytest.approx(1.5)


def test_a_tensor_with_zero_mean_contributes_no_projection() -> None:
    """ḡ^(l) = 0 while gᵢ^(l) ≠ 0: Q_l/‖ḡ^(l)‖² is taken as 0, so rᵢ^(l) = gᵢ^(l).

    (The AdAdaGrad transcription divides 0 by 0 there and returns NaN.)
    """
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64) + 1.0
    z = torch.tensor([[1.0, -2.0], [-1.0, 2.0], [3.0, 0.5], [-3.0, -0.5]], dtype=torch.float64)
    stats = stats_from_per_sample({"w": w, "z": z}, 4, True, False)
    v_ip_w, v_orth_w = adadagrad_layerwise({"w": w})
    assert inner_product_variance(stats, mode="layerwise") == pytest.approx(v_ip_w, rel=1e-9)
    v_orth_z = float(torch.var(z, dim=0).sum())
    assert orthogonal_variance(stats, mode="layerwise") == pytest.approx(
        v_orth_w + v_orth_z, rel=1e-9
    )
    assert math.isnan(adadagrad_layerwise({"z": z})[1])


def test_single_tensor_layerwise_equals_global() -> None:
    per_sample = random_per_sample(6, 7, shapes=((3, 5),))
    stats = stats_from_per_sample(per_sample, 6, True, False)
    close(stats.layer_inner_sum, stats.sum_sq_inner, 1e-12, "Q vs P2")
    close(stats.layer_norm4_sum, stats.group_norm4_sum, 1e-12, "norm4")
    close(stats.layer_ratio_sum, stats.group_ratio_sum, 1e-12, "ratio")
    for fn in (inner_product_variance, orthogonal_variance):
        assert fn(stats, mode="layerwise") == pytest.approx(fn(stats), rel=1e-12)

    # The same through the hooks engine on a model with one parameter tensor.
    model = nn.Linear(5, 3, bias=False).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    hooked = compute_stats(model, loss_for("mean"), x, y, inner_products=True)
    for fn in (inner_product_variance, orthogonal_variance):
        assert fn(hooked, mode="layerwise") == pytest.approx(fn(hooked), rel=1e-9)


# ---------------------------------------------------------------- merging and bookkeeping


def test_merging_adds_the_layer_fields_and_pools_within_groups() -> None:
    parts = [random_per_sample(4, 11), random_per_sample(6, 12)]
    parts[1] = {n: g - 1.3 for n, g in parts[1].items()}  # a different mean
    a, b = (stats_from_per_sample(p, next(iter(p.values())).shape[0], True, False) for p in parts)
    merged = a + b
    for field in LAYER_FIELDS:
        close(getattr(merged, field), getattr(a, field) + getattr(b, field), 1e-15, field)
    # Pooled within-group sums of squares, per tensor, over b − k = 8 degrees of freedom.
    ss_ip = ss_orth = 0.0
    for per_sample in parts:
        for g in per_sample.values():
            flat = g.reshape(g.shape[0], -1)
            mean = flat.mean(0)
            p = flat @ mean
            ss_ip += float(((p - mean @ mean) ** 2).sum())
            r = flat - torch.outer(p / (mean @ mean), mean)
            ss_orth += float((r * r).sum())
    assert merged.num_samples == 10 and merged.num_groups == 2
    assert inner_product_variance(merged, mode="layerwise") == pytest.approx(ss_ip / 8, rel=1e-9)
    assert orthogonal_variance(merged, mode="layerwise") == pytest.approx(ss_orth / 8, rel=1e-9)
    assert sum([a, b]).layer_inner_sum is not None


def test_layer_fields_survive_copies_state_dict_and_empty() -> None:
    per_sample = random_per_sample(3, 4)
    s = stats_from_per_sample(per_sample, 3, True, False)
    for t in (s.to("cpu"), s.detach_copy(), GradStats.from_state_dict(s.state_dict())):
        for field in LAYER_FIELDS:
            assert torch.equal(getattr(t, field), getattr(s, field))
    assert set(LAYER_FIELDS) <= set(s.state_dict())
    params = {n: g[0] for n, g in per_sample.items()}
    e = GradStats.empty(params, inner_products=True)
    for field in LAYER_FIELDS:
        value = getattr(e, field)
        assert value is not None and value.dtype == torch.float64 and float(value) == 0.0
        assert float(getattr(e + s, field)) == float(getattr(s, field))
    assert GradStats.empty(params).layer_inner_sum is None


def test_fields_are_none_without_inner_products() -> None:
    s = stats_from_per_sample(random_per_sample(3, 4), 3, inner_products=False, coordinates=False)
    assert all(getattr(s, f) is None for f in LAYER_FIELDS)
    model, (x, y) = CASES[0][1]().double(), CASES[0][2](4, torch.Generator().manual_seed(0))
    for engine in ("hooks", "functorch", "reference"):
        t = compute_stats(copy.deepcopy(model), loss_for("mean"), x.double(), y, engine=engine)
        assert all(getattr(t, f) is None for f in LAYER_FIELDS)


# ---------------------------------------------------------------- errors


def test_unknown_mode_is_refused_with_the_valid_ones() -> None:
    s = stats_from_per_sample(random_per_sample(3, 0), 3, True, False)
    for fn in (inner_product_variance, orthogonal_variance):
        with pytest.raises(ValueError, match=r"'global', 'layerwise'.*got 'layer'"):
            fn(s, mode="layer")  # type: ignore[arg-type]


def test_missing_layer_fields_raise_with_the_fix() -> None:
    g = torch.randn(3, 4, dtype=torch.float64)
    p = g @ g.mean(0)
    s = GradStats.from_batch(3, {"w": g.sum(0)}, (g * g).sum(), (p * p).sum())
    assert not math.isnan(inner_product_variance(s))  # global still works
    for fn in (inner_product_variance, orthogonal_variance):
        with pytest.raises(ValueError, match=r"layerwise.*inner_products=True"):
            fn(s, mode="layerwise")
    with_layer = GradStats.from_batch(
        3, {"w": g.sum(0)}, (g * g).sum(), (p * p).sum(), layer_sq_inner={"w": (p * p).sum()}
    )
    with pytest.raises(ValueError, match="only one side has the layerwise inner products"):
        s + with_layer
    with pytest.raises(ValueError, match="layer_sq_inner must have one entry per grad_sum"):
        GradStats.from_batch(3, {"w": g.sum(0)}, (g * g).sum(), layer_sq_inner={"v": p.sum()})


# ---------------------------------------------------------------- rules, per parameter


def _expected_inner(blocks: list[Tensor]) -> list[Tensor]:
    """qᵢ^(l) = ⟨g̃ᵢ^(l), Σⱼ g̃ⱼ^(l)⟩ from materialised per-sample blocks."""
    out = []
    for g in blocks:
        flat = g.reshape(g.shape[0], -1)
        out.append(flat @ flat.sum(0))
    return out


def _check_rule_inner(rule, call: LayerCall, need: Need) -> None:
    result = rule.compute(call, need)
    assert result.inner is not None and len(result.inner) == len(call.names)
    expected = _expected_inner(rule.per_sample(call, slice(0, call.batch_size)))
    for name, q, e in zip(call.names, result.inner, expected, strict=True):
        assert q.shape == (call.batch_size,)
        close(q, e, 1e-12, f"q[{name}]")


def _linear_call(layer: nn.Linear, a: Tensor, d: Tensor, names=("weight", "bias")) -> LayerCall:
    names = tuple(n for n in names if getattr(layer, n) is not None)
    return LayerCall(layer, a, d, names, tuple(getattr(layer, n) for n in names))


@pytest.mark.parametrize(("b", "route"), [(4, "gram"), (16, "direct")])
@pytest.mark.parametrize("names", [("weight", "bias"), ("weight",), ("bias",)])
def test_linear_ghost_routes_give_per_parameter_inner_products(b: int, route: str, names) -> None:
    d_in = d_out = 20
    layer = nn.Linear(d_in, d_out).double()
    # LinearRule._ghost takes the direct route when d_in·d_out ≤ b(d_in + d_out) (and there
    # is a weight; a bias alone always takes the Gram route).
    assert (d_in * d_out <= b * (d_in + d_out)) == (route == "direct")
    gen = torch.Generator().manual_seed(b)
    a = torch.randn(b, 20, generator=gen, dtype=torch.float64)
    d = torch.randn(b, 20, generator=gen, dtype=torch.float64)
    _check_rule_inner(LinearRule(), _linear_call(layer, a, d, names), Need(inner=True))


@pytest.mark.parametrize("budget", [64, 10**9], ids=["chunked", "one-block"])
def test_sequence_linear_and_conv_give_per_parameter_inner_products(budget: int) -> None:
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(6, 5).double()
    a = torch.randn(5, 4, 6, generator=gen, dtype=torch.float64)
    d = torch.randn(5, 4, 5, generator=gen, dtype=torch.float64)
    need = Need(inner=True, max_block_bytes=budget)
    _check_rule_inner(LinearRule(), _linear_call(layer, a, d), need)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(5, 3, 6, 6, generator=gen, dtype=torch.float64)
    dy = torch.randn(5, 4, 6, 6, generator=gen, dtype=torch.float64)
    call = LayerCall(conv, x, dy, ("weight", "bias"), (conv.weight, conv.bias))
    _check_rule_inner(ConvRule(), call, need)


def test_embedding_gives_its_weight_inner_product() -> None:
    emb = nn.Embedding(9, 4, padding_idx=0).double()
    tokens = torch.tensor([[2, 2, 5, 1], [0, 3, 3, 3], [8, 2, 7, 7]])
    d = torch.randn(3, 4, 4, dtype=torch.float64)
    _check_rule_inner(
        EmbeddingRule(), LayerCall(emb, tokens, d, ("weight",), (emb.weight,)), Need(inner=True)
    )


# ---------------------------------------------------------------- engines


def _layer_fields_close(actual: GradStats, expected: GradStats, rtol: float = 1e-9) -> None:
    for field in LAYER_FIELDS:
        value = getattr(actual, field)
        assert value is not None, field
        close(value, getattr(expected, field), rtol, field)


def _hooks_vs_reference(model: nn.Module, x: Tensor, y: Tensor, reduction: str, **tracker_kw):
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    loss = loss_for(reduction)
    expected = compute_stats(
        copy.deepcopy(model),
        loss,
        x,
        y,
        engine="reference",
        loss_reduction=reduction,
        inner_products=True,
        batchnorm=tracker_kw.get("batchnorm", "error"),
    )
    with GradStatsTracker(
        model, loss_reduction=reduction, inner_products=True, **tracker_kw
    ) as tracker:
        loss(model(x), y).backward()
        actual = tracker.pop()
    _layer_fields_close(actual, expected)
    assert_stats_close(actual, expected)
    return actual, expected


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("budget", [64, 256 * 2**20], ids=["chunked", "default"])
def test_hooks_layer_fields_match_reference(case, reduction: str, budget: int) -> None:
    _, make, data = case
    x, y = data(6, torch.Generator().manual_seed(99))
    _hooks_vs_reference(make(), x, y, reduction, max_block_bytes=budget)


@pytest.mark.parametrize("budget", [64, 256 * 2**20], ids=["chunked", "default"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_tied_parameters_layer_fields(reduction: str, budget: int) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.mix = nn.Linear(4, 4)
            self.out = nn.Linear(4, 7, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, tokens: Tensor) -> Tensor:
            h = self.emb(tokens)
            h = self.mix(torch.tanh(self.mix(h)))
            return self.out(h.mean(1))

    torch.manual_seed(0)
    tokens = torch.randint(0, 7, (5, 3))
    _hooks_vs_reference(
        Tied(), tokens, torch.randint(0, 7, (5,)), reduction, max_block_bytes=budget
    )


@pytest.mark.parametrize(("b", "route"), [(3, "gram"), (24, "direct")])
def test_linear_inner_routes_layer_fields(b: int, route: str) -> None:
    torch.manual_seed(b)
    d = 12
    model = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 3))
    assert (d * d <= b * (d + d)) == (route == "direct")  # the first layer's route
    _hooks_vs_reference(model, torch.randn(b, 12), torch.randint(0, 3, (b,)), "mean")


def test_norm_layers_layer_fields() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.InstanceNorm2d(4, affine=True),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4).eval(),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.LayerNorm(6),
        nn.Linear(6, 3),
    )
    _hooks_vs_reference(model, torch.randn(5, 3, 6, 6), torch.randint(0, 3, (5,)), "sum")


def test_batchnorm_approximation_layer_fields_without_a_pre_norm_bias() -> None:
    """See ILL_CONDITIONED_UNDER_BN in test_rules.py for why the bias is left out."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Linear(4, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)
    )
    _hooks_vs_reference(
        model, torch.randn(6, 4), torch.randint(0, 3, (6,)), "mean", batchnorm="approximate"
    )


def test_micro_batches_keep_layer_fields_per_pass() -> None:
    torch.manual_seed(3)
    model = SmallCNN().double()
    x = torch.randn(7, 3, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (7,))
    loss = loss_for("sum")
    with GradStatsTracker(model, loss_reduction="sum", inner_products=True) as tracker:
        for rows in (slice(0, 3), slice(3, 7)):
            loss(model(x[rows]), y[rows]).backward()
        merged = tracker.pop()
    parts = [
        compute_stats(
            copy.deepcopy(model),
            loss,
            x[r],
            y[r],
            engine="reference",
            loss_reduction="sum",
            inner_products=True,
        )
        for r in (slice(0, 3), slice(3, 7))
    ]
    assert merged.num_groups == 2
    _layer_fields_close(merged, parts[0] + parts[1])
