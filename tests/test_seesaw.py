"""Seesaw from an LR schedule: milestones where the LR has halved, the batch doubled there."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch.utils.data import TensorDataset

import adabatch.policies.seesaw as seesaw_module
from adabatch import AdaptiveLoader, BatchSizeScheduler
from adabatch.policies import lr_curve, seesaw_policy, seesaw_thresholds


def test_the_docstring_examples() -> None:
    assert doctest.testmod(seesaw_module).failed == 0


def test_a_step_schedule_becomes_batch_doublings_at_its_milestones() -> None:
    lrs = lr_curve(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 20], 0.5), 30)
    assert lrs[9] == 1.0 and lrs[10] == 0.5 and lrs[20] == 0.25
    assert seesaw_thresholds(lrs, 0.5, 32) == ((0, 32), (320, 64), (640, 128))
    # A cut by 4 at once is two Seesaw cuts at one step: the batch quadruples there.
    quarter = lr_curve(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10], 0.25), 20)
    assert seesaw_thresholds(quarter, 0.5, 32) == ((0, 32), (320, 128))


def test_a_cosine_gets_a_milestone_wherever_it_has_halved_again() -> None:
    total = 100
    lrs = lr_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    pairs = seesaw_thresholds(lrs, 0.5, 8, max_batch_size=64)
    assert [b for _, b in pairs] == [8, 16, 32, 64]
    for k, (samples, _) in enumerate(pairs[1:], start=1):
        t = samples // 8
        assert lrs[t] <= 0.5**k < lrs[t - 1]  # the first step at or below α^k
        # By hand: ½(1 + cos(πt/T)) = α^k at t = T·acos(2α^k − 1)/π.
        assert t == math.ceil(total * math.acos(2 * 0.5**k - 1) / math.pi - 1e-9)


def test_a_wsd_schedule_gets_its_milestones_in_the_decay_only() -> None:
    """Warm-up 10, stable to 60, linear decay to 0 at 100 (a LambdaLR): cuts in the decay."""

    def wsd(t: int) -> float:
        if t < 10:
            return (t + 1) / 10
        return 1.0 if t < 60 else (100 - t) / 40

    lrs = lr_curve(lambda o: torch.optim.lr_scheduler.LambdaLR(o, wsd), 100)
    pairs = seesaw_thresholds(lrs, 0.5, 4, max_batch_size=32)
    # By hand: (100 − t)/40 ≤ 2⁻ᵏ first at t = 100 − 40·2⁻ᵏ: t = 80, 90, 95.
    assert pairs == ((0, 4), (80 * 4, 8), (90 * 4, 16), (95 * 4, 32))


def test_a_warm_up_is_not_a_cut_the_milestones_count_from_the_peak() -> None:
    """Warm-up over 10 steps, then the step schedule: the same milestones, shifted by it."""
    warm = [(t + 1) / 10 for t in range(10)]
    lrs = warm + [1.0] * 10 + [0.5] * 10 + [0.25] * 10
    assert seesaw_thresholds(lrs, 0.5, 32) == ((0, 32), (20 * 32, 64), (30 * 32, 128))


def test_the_cap_stops_the_milestones_and_bad_alpha_is_refused() -> None:
    lrs = [0.5**k for k in range(10)]
    assert seesaw_thresholds(lrs, 0.5, 8, max_batch_size=32) == ((0, 8), (8, 16), (16, 32))
    with pytest.raises(ValueError, match="alpha must be in"):
        seesaw_thresholds(lrs, 1.0, 8)
    with pytest.raises(ValueError, match="rise above 0"):
        seesaw_thresholds([0.0, 0.0], 0.5, 8)


def test_seesaw_in_the_scheduler_cuts_the_lr_by_root_alpha_and_doubles_the_batch() -> None:
    """The LR in force: the step schedule at samples/B₀, times √(B/B₀) — lr₀·(1/√2)^k."""
    base, planned = 8, 30
    milestones = [10, 20]

    def make(o):
        return torch.optim.lr_scheduler.LambdaLR(
            o, lambda t: 0.5 ** sum(t >= m for m in milestones)
        )

    policy = seesaw_policy(lr_curve(make, planned), alpha=0.5, batch_size=base)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    loader = AdaptiveLoader(TensorDataset(torch.arange(10_000)), base, shuffle=False)
    scheduler = BatchSizeScheduler(
        policy, loader, opt, lr_rule="sqrt", lr_scheduler=make(opt),
        lr_scheduler_interval="step", lr_schedule_unit="samples",
    )  # fmt: skip
    consumed, rows = 0, []
    for (batch,) in loader:
        rows.append((consumed, len(batch), opt.param_groups[0]["lr"]))
        consumed += len(batch)
        w.grad = torch.zeros(1)
        opt.step()
        scheduler.step()
        if consumed >= planned * base:
            break
    for samples, size, lr in rows:
        k = sum(samples >= m * base for m in milestones)
        assert size == base * 2**k
        assert lr == pytest.approx(0.1 * (1 / math.sqrt(2)) ** k)
    # 10 steps at 8, then 5 at 16, then 2.5 at 32: 18 steps for the 30 planned at B₀.
    assert len(rows) == 10 + 5 + 3


def test_an_experiment_derives_seesaw_from_its_own_per_step_schedule() -> None:
    from adabatch.experiments.build import build, step_schedule_factor
    from adabatch.experiments.config import (
        Config,
        DataConfig,
        ModelConfig,
        OptimizerConfig,
        PolicyConfig,
        ScheduleConfig,
        TrainConfig,
    )

    config = Config(
        data=DataConfig(
            name="synthetic-images", options={"num_train": 512, "num_test": 64, "image_size": 8}
        ),
        model=ModelConfig(name="mlp", options={"hidden": (16,)}),
        optimizer=OptimizerConfig(name="adamw", lr=1e-3),
        schedule=ScheduleConfig(name="cosine", interval="step"),
        policy=PolicyConfig(
            name="seesaw", batch_size=16, lr_rule="sqrt", options={"max_batch_size": 128}
        ),
        train=TrainConfig(epochs=4, eval_batch_size=64),
    )
    built = build(config)
    per_epoch = 512 // 16
    factor = step_schedule_factor(config, per_epoch)
    curve = [factor(t) for t in range(4 * per_epoch)]
    expected = seesaw_thresholds(curve, 0.5, 16, 128)
    assert built.scheduler.policy.thresholds == " ".join(f"{a}:{b}" for a, b in expected)
    assert built.scheduler.lr_schedule_unit == "samples"
    built.trainer().fit(4)
    scheduler = built.scheduler
    assert scheduler.batch_size == max(b for _, b in expected if _ <= scheduler.samples)
    # The LR in force: the cosine at the nominal samples / B₀, times √(B/B₀).
    lr = built.optimizer.param_groups[0]["lr"]
    want = 1e-3 * factor(scheduler.nominal_samples // 16) * math.sqrt(scheduler.batch_size / 16)
    assert lr == pytest.approx(want)
    with pytest.raises(Exception, match="decaying schedule stepped per step"):
        build(Config(**{**config.__dict__, "schedule": ScheduleConfig(name="cosine")}))
