"""Contract tests over every registered engine: each field equals the reference engine.

Every engine × {MLP with biases, CNN with GroupNorm, Conv1d, Embedding + LayerNorm + Linear over
a sequence, a model with frozen parameters, nn.TransformerEncoder in both layouts, LSTM/GRU/RNN
classifiers reading h_n or the outputs} × loss reduction × b ∈ {1, 2, 7}, in float64:
every GradStats field within 1e-9 (relative to the field's scale) of the reference engine, and
p.grad equal to a plain backward.
"""

from __future__ import annotations

import copy

import pytest
import torch

from _compare import assert_grads_close, assert_stats_close, close
from _models import CASES, NO_VMAP, loss_for
from adabatch.stats import ENGINES, GradStats, compute_stats


def _setup(make, data, b: int):
    g = torch.Generator().manual_seed(1234 + b)
    model = make().double()
    x, y = data(b, g)
    if x.is_floating_point():
        x = x.double()
    return model, x, y


def _plain_backward(model, x, y, reduction: str):
    plain = copy.deepcopy(model)
    loss_for(reduction)(plain(x), y).backward()
    return plain


@pytest.mark.parametrize("b", [1, 2, 7])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engine_matches_reference(engine: str, case, reduction: str, b: int) -> None:
    name, make, data = case
    model, x, y = _setup(make, data, b)
    if engine == "functorch" and name in NO_VMAP:
        with pytest.raises(TypeError, match=r"functorch engine cannot run (LSTM|GRU|RNN)"):
            compute_stats(model, loss_for(reduction), x, y, engine=engine)
        return
    pristine = copy.deepcopy(model)
    ref_model = copy.deepcopy(model)
    expected = compute_stats(
        ref_model,
        loss_for(reduction),
        x,
        y,
        engine="reference",
        loss_reduction=reduction,
        inner_products=True,
        coordinates=True,
    )
    actual = compute_stats(
        model,
        loss_for(reduction),
        x,
        y,
        engine=engine,
        loss_reduction=reduction,
        inner_products=True,
        coordinates=True,
    )
    assert_stats_close(actual, expected)
    assert_grads_close(model, _plain_backward(pristine, x, y, reduction))


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_p_grad_matches_plain_backward_and_accumulates(engine: str) -> None:
    _, make, data = CASES[1]  # the CNN: conv, GroupNorm, in-place ReLU, linear
    model, x, y = _setup(make, data, 5)
    plain = copy.deepcopy(model)  # (deepcopy does not copy .grad)
    # A stale gradient must be accumulated onto, as loss.backward() does.
    for p in [*model.parameters(), *plain.parameters()]:
        p.grad = torch.full_like(p, 0.5)
    loss_for("mean")(plain(x), y).backward()
    compute_stats(model, loss_for("mean"), x, y, engine=engine)
    assert_grads_close(model, plain)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_optional_fields_are_off_by_default(engine: str) -> None:
    _, make, data = CASES[0]
    model, x, y = _setup(make, data, 4)
    stats = compute_stats(model, loss_for("mean"), x, y, engine=engine)
    assert stats.sum_sq_inner is None and stats.coord_sq_sum is None
    assert stats.group_norm4_sum is None and stats.group_ratio_sum is None


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_frozen_parameters_are_skipped(engine: str) -> None:
    _, make, data = CASES[4]
    model, x, y = _setup(make, data, 3)
    stats = compute_stats(model, loss_for("mean"), x, y, engine=engine, coordinates=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(stats.grad_sum) == trainable == ["0.bias", "4.weight", "4.bias"]
    assert stats.coord_sq_sum is not None and list(stats.coord_sq_sum) == trainable
    assert model[0].weight.grad is None and model[2].weight.grad is None


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("case", CASES[:4], ids=[c[0] for c in CASES[:4]])
def test_micro_batches_add_up(engine: str, case) -> None:
    """stats(A ∪ B) = stats(A) + stats(B) for b, Σgᵢ, S2 and M; P2 pools per group."""
    _, make, data = case
    model, x, y = _setup(make, data, 7)
    kw = dict(engine=engine, loss_reduction="sum", inner_products=True, coordinates=True)
    whole = compute_stats(copy.deepcopy(model), loss_for("sum"), x, y, **kw)
    part_a = compute_stats(copy.deepcopy(model), loss_for("sum"), x[:3], y[:3], **kw)
    part_b = compute_stats(copy.deepcopy(model), loss_for("sum"), x[3:], y[3:], **kw)
    merged = part_a + part_b
    assert merged.num_samples == whole.num_samples == 7
    assert merged.num_groups == 2
    for name in whole.grad_sum:
        close(merged.grad_sum[name], whole.grad_sum[name], 1e-9, name)
        close(merged.coord_sq_sum[name], whole.coord_sq_sum[name], 1e-9, name)
    close(merged.sum_sq_norms, whole.sum_sq_norms, 1e-9, "S2")
    close(merged.sum_sq_inner, part_a.sum_sq_inner + part_b.sum_sq_inner, 1e-12, "P2")
    assert sum([part_a, part_b]).num_samples == 7


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_float32_close_to_float64_reference(engine: str) -> None:
    _, make, data = CASES[1]
    model64, x, y = _setup(make, data, 8)
    model32 = copy.deepcopy(model64).float()
    expected = compute_stats(
        model64, loss_for("mean"), x, y, engine="reference", inner_products=True
    )
    actual = compute_stats(
        model32, loss_for("mean"), x.float(), y, engine=engine, inner_products=True
    )
    assert actual.grad_sum["conv1.weight"].dtype == torch.float32
    assert actual.sum_sq_norms.dtype == torch.float64
    assert_stats_close(actual, expected, rtol=1e-4)


def test_stats_are_independent_of_p_grad() -> None:
    """grad_sum must not alias p.grad: the optimizer or the user may modify p.grad in place."""
    _, make, data = CASES[0]
    model, x, y = _setup(make, data, 4)
    stats = compute_stats(model, loss_for("mean"), x, y)
    before = {n: t.clone() for n, t in stats.grad_sum.items()}
    for p in model.parameters():
        p.grad.mul_(0.0)
    for n, t in stats.grad_sum.items():
        assert torch.equal(t, before[n])


def test_gradstats_type() -> None:
    _, make, data = CASES[0]
    model, x, y = _setup(make, data, 2)
    assert isinstance(compute_stats(model, loss_for("mean"), x, y), GradStats)
