"""β₂ at a fixed half-life in tokens and AdamW's timescale, against hand computations."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import adabatch.hparam_coupling as hc
from adabatch import AdaptiveLoader, BatchSizeScheduler
from adabatch.hparam_coupling import (
    HyperparameterCoupling,
    adamw_timescale,
    beta2_for_batch,
    half_life_tokens,
    weight_decay_for_batch,
)
from adabatch.policies import make_policy


def test_the_docstring_examples() -> None:
    assert doctest.testmod(hc).failed == 0


def test_beta2_keeps_its_half_life_in_tokens() -> None:
    assert beta2_for_batch(0.95, 512, 128) == pytest.approx(0.95**4)
    assert beta2_for_batch(0.95, 64, 128) == pytest.approx(math.sqrt(0.95))
    tokens = 1024  # per sequence
    for batch in (1, 32, 128, 4096):
        beta = beta2_for_batch(0.99, batch, 128)
        # ln ½ / ln β steps of B·T tokens: the same number of tokens at every batch size.
        assert half_life_tokens(beta, batch * tokens) == pytest.approx(
            half_life_tokens(0.99, 128 * tokens)
        )
    # By hand: β = 0.5 halves in one step, so its half-life is one step of tokens.
    assert half_life_tokens(0.5, 4096) == pytest.approx(4096)


@pytest.mark.parametrize(("rule", "factor", "expected"), [
    ("none", 1.0, 0.4), ("sqrt", 2.0, 0.2), ("linear", 4.0, 0.1),
])  # fmt: skip
def test_weight_decay_keeps_adamws_timescale(rule, factor, expected) -> None:
    """4× the batch: λ ×4 without an LR rule, ×2 with √, unchanged with the linear rule."""
    wd = weight_decay_for_batch(0.1, 512, 128, lr_factor=factor)
    assert wd == pytest.approx(expected)
    tau0 = adamw_timescale(128, 1e-3, 0.1, 1e6)
    assert adamw_timescale(512, 1e-3 * factor, wd, 1e6) == pytest.approx(tau0)
    assert tau0 == pytest.approx(128 / (1e-3 * 0.1 * 1e6))


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"beta2 must be in \(0, 1\)"):
        beta2_for_batch(1.0, 2, 1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        weight_decay_for_batch(-0.1, 2, 1, 1.0)
    with pytest.raises(ValueError, match="beta must be in"):
        half_life_tokens(0.0, 10)


def _adamw(**kw):
    model = nn.Linear(4, 2)
    return torch.optim.AdamW(
        [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, **kw,
    )  # fmt: skip


def test_the_coupling_writes_the_groups_and_resumes() -> None:
    opt = _adamw()
    coupling = HyperparameterCoupling(
        opt, base_batch_size=128, beta2="half-life", weight_decay="timescale"
    )
    coupling.update(512, lr_factor=2.0)
    assert opt.param_groups[0]["betas"] == (0.9, pytest.approx(0.95**4))  # β₁ untouched
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.2)
    assert opt.param_groups[1]["weight_decay"] == 0.0  # a group without decay keeps none
    state = coupling.state_dict()
    fresh = _adamw()
    again = HyperparameterCoupling(
        fresh, base_batch_size=128, beta2="half-life", weight_decay="timescale"
    )
    again.load_state_dict(state)
    assert fresh.param_groups[0]["betas"] == opt.param_groups[0]["betas"]
    assert fresh.param_groups[0]["weight_decay"] == pytest.approx(0.2)
    coupling.update(128)  # back at B₀: the reference values
    assert opt.param_groups[0]["betas"] == (0.9, pytest.approx(0.95))
    with pytest.raises(ValueError, match="beta2='half-life', this one 'fixed'"):
        HyperparameterCoupling(_adamw(), base_batch_size=128).load_state_dict(state)


def test_rules_that_do_not_apply_are_refused() -> None:
    sgd = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Adam-type optimizer"):
        HyperparameterCoupling(sgd, base_batch_size=8, beta2="half-life")
    adam_l2 = torch.optim.Adam(nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="decoupled weight decay"):
        HyperparameterCoupling(adam_l2, base_batch_size=8, weight_decay="timescale")
    decoupled = torch.optim.Adam(
        nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=0.1, decoupled_weight_decay=True
    )
    HyperparameterCoupling(decoupled, base_batch_size=8, weight_decay="timescale")
    with pytest.raises(ValueError, match="weight_decay rule"):
        HyperparameterCoupling(decoupled, base_batch_size=8, weight_decay="linear")


def test_the_scheduler_couples_all_three_on_every_change() -> None:
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 2))
    policy = make_policy("schedule", batch_size=8, every=1, factor=2, max_batch_size=32)
    loader = AdaptiveLoader(data, 8, seed=0)
    opt = _adamw()
    scheduler = BatchSizeScheduler(
        policy, loader, opt, lr_rule="sqrt", beta2_rule="half-life", weight_decay_rule="timescale"
    )
    for epoch in range(2):
        for _ in loader:
            opt.step()
            scheduler.step()
        scheduler.step_epoch()
        batch = 8 * 2 ** (epoch + 1)
        ratio = batch / 8
        group = opt.param_groups[0]
        assert group["lr"] == pytest.approx(1e-3 * math.sqrt(ratio))
        assert group["betas"][1] == pytest.approx(0.95**ratio)
        assert group["weight_decay"] == pytest.approx(0.1 * ratio / math.sqrt(ratio))
    state = scheduler.state_dict()
    opt2 = _adamw()
    again = BatchSizeScheduler(
        policy, AdaptiveLoader(data, 8, seed=0), opt2, lr_rule="sqrt", beta2_rule="half-life",
        weight_decay_rule="timescale",
    )  # fmt: skip
    opt2.load_state_dict(opt.state_dict())
    again.load_state_dict(state)
    assert opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"]
    assert opt2.param_groups[0]["weight_decay"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="needs the optimizer"):
        BatchSizeScheduler(policy, AdaptiveLoader(data, 8), None, beta2_rule="half-life")
