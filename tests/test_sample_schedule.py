"""Batch-size schedules in samples and tokens (thresholds, Megatron's ramp), by hand."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch.utils.data import TensorDataset

import adabatch.policies.ramps as ramps
from adabatch import AdaptiveLoader, BatchSizeScheduler
from adabatch.policies import (
    make_policy,
    parse_amount,
    parse_megatron_rampup,
    parse_thresholds,
    ramp_batch_size,
    threshold_batch_size,
)


def test_the_docstring_examples() -> None:
    assert doctest.testmod(ramps).failed == 0


def test_amounts_and_thresholds_parse_as_written() -> None:
    assert parse_amount("2K") == 2000 and parse_amount("3T") == 3 * 10**12
    assert parse_amount("0.25M") == 250_000 and parse_amount("7G") == 7 * 10**9
    assert parse_thresholds("0:768 250B:1536") == ((0, 768), (250 * 10**9, 1536))
    assert parse_thresholds([(0, 8), (100, 16)]) == ((0, 8), (100, 16))
    assert parse_megatron_rampup([32, 32, 1000]) == (32, 32, 1000)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("10:8", "first threshold must be 0"), ("0:8 5:16 5:32", "must increase"),
    ("0:8 5", "<amount>:<batch size>"), ("0:8 1x:16", "cannot read the amount"),
    ("0:8 1.5:16", "not a whole number"), ("0:eight", "must be an integer"),
])  # fmt: skip
def test_bad_schedules_say_what_is_wrong(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_thresholds(text)


def test_threshold_and_ramp_values_by_hand() -> None:
    schedule = ((0, 8), (100, 16), (150, 32))
    assert [threshold_batch_size(schedule, c) for c in (0, 99, 100, 149, 150, 10**9)] == [
        8, 8, 16, 16, 32, 32,
    ]  # fmt: skip
    # Megatron: 3 increments of 32 over 300 samples, one per 100.
    values = [ramp_batch_size(c, start=32, increment=32, ramp=300, final=128) for c in
              (0, 99, 100, 199, 200, 299, 300, 301)]  # fmt: skip
    assert values == [32, 32, 64, 64, 96, 96, 128, 128]
    with pytest.raises(ValueError, match="whole number of increments"):
        ramp_batch_size(0, start=32, increment=30, ramp=300, final=128)


def _run(policy, steps, n=100_000, resume_at=None):
    """Train-loop shaped: draw a batch, step, let the scheduler decide; the batch sizes seen."""
    data = TensorDataset(torch.arange(n))
    loader = AdaptiveLoader(data, policy.batch_size, shuffle=False)
    scheduler = BatchSizeScheduler(policy, loader)
    sizes = []

    def epochs(loader):
        while True:  # epoch after epoch
            yield from loader

    it = epochs(loader)
    for step in range(steps):
        if resume_at is not None and step == resume_at:
            state = scheduler.state_dict()
            loader = AdaptiveLoader(data, policy.batch_size, shuffle=False)
            scheduler = BatchSizeScheduler(policy, loader)
            scheduler.load_state_dict(state)
            it = epochs(loader)
        (batch,) = next(it)
        sizes.append(len(batch))
        scheduler.step()
    return sizes, scheduler


def test_a_threshold_applies_from_the_step_after_the_one_that_reaches_it() -> None:
    policy = make_policy("sample-schedule", batch_size=8, thresholds="0:8 40:16 56:32")
    sizes, scheduler = _run(policy, 6)
    # 5 batches of 8 reach 40: the sixth step has 16; after it, 56 samples: then 32.
    assert sizes == [8, 8, 8, 8, 8, 16]
    assert scheduler.samples == 56 and scheduler.batch_size == 32


def test_a_step_crossing_several_thresholds_lands_on_the_last() -> None:
    policy = make_policy("sample-schedule", batch_size=8, thresholds="0:8 4:16 6:24 7:40")
    sizes, scheduler = _run(policy, 3)
    assert sizes == [8, 40, 40]
    assert [(d.old_batch_size, d.new_batch_size) for d in scheduler.decisions] == [(8, 40)]


def test_tokens_are_samples_times_the_sequence_length() -> None:
    policy = make_policy(
        "sample-schedule", batch_size=4, thresholds="0:4 64:8", unit="tokens", tokens_per_sample=8
    )
    sizes, scheduler = _run(policy, 4)
    assert sizes == [4, 4, 8, 8]  # 2 steps × 4 samples × 8 tokens = 64 tokens
    assert scheduler.decisions[0].statistic == "tokens" and scheduler.decisions[0].value == 64


def test_megatrons_ramp_matches_its_formula_step_by_step() -> None:
    policy = make_policy("sample-schedule", batch_size=32, rampup="32 32 300", max_batch_size=128)
    sizes, _ = _run(policy, 10)
    consumed, expected = 0, []
    for _ in range(10):
        expected.append(ramp_batch_size(consumed, start=32, increment=32, ramp=300, final=128))
        consumed += expected[-1]
    assert sizes == expected == [32, 32, 32, 32, 64, 64, 96, 128, 128, 128]


def test_resume_mid_schedule_continues_exactly() -> None:
    policy = make_policy("sample-schedule", batch_size=32, rampup="32 32 300", max_batch_size=128)
    straight, a = _run(policy, 10)
    resumed, b = _run(policy, 10, resume_at=5)
    assert resumed == straight and a.samples == b.samples


def test_the_schedule_must_start_at_b0_and_be_one_kind() -> None:
    with pytest.raises(ValueError, match="starts at batch 16"):
        make_policy("sample-schedule", batch_size=8, thresholds="0:16 10:32")
    with pytest.raises(ValueError, match="exactly one of"):
        make_policy("sample-schedule", batch_size=8)
    with pytest.raises(ValueError, match="give max_batch_size"):
        make_policy("sample-schedule", batch_size=8, rampup="8 8 100")
    with pytest.raises(ValueError, match="tokens_per_sample"):
        make_policy("sample-schedule", batch_size=8, thresholds="0:8", unit="tokens")


def test_a_step_schedule_planned_at_b0_is_followed_in_samples() -> None:
    """A linear decay planned over 40 steps at B₀ = 8 (320 samples) ends at 320 samples."""
    data = TensorDataset(torch.arange(10_000))
    policy = make_policy("sample-schedule", batch_size=8, thresholds="0:8 64:16 128:32")
    loader = AdaptiveLoader(data, 8, shuffle=False)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    planned = 40
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, (planned - t) / planned))
    scheduler = BatchSizeScheduler(
        policy, loader, opt, lr_scheduler=decay, lr_scheduler_interval="step",
        lr_schedule_unit="samples",
    )  # fmt: skip
    seen, consumed = [], 0
    for (batch,) in loader:
        want = 0.1 * max(0.0, (planned - consumed // 8) / planned)
        seen.append((opt.param_groups[0]["lr"], want))
        consumed += len(batch)
        w.grad = torch.zeros(1)
        opt.step()
        scheduler.step()
        if consumed >= 320:
            break
    assert all(got == pytest.approx(want) for got, want in seen)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)  # the decay ended at 320 samples
    assert len(seen) < planned  # in fewer steps than planned: the batch grew


def test_sample_indexed_schedules_refuse_what_cannot_follow() -> None:
    data = TensorDataset(torch.arange(100))
    policy = make_policy("sample-schedule", batch_size=8, thresholds="0:8")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    step = torch.optim.lr_scheduler.StepLR(opt, 5)
    with pytest.raises(ValueError, match="lr_schedule_unit='steps'"):
        BatchSizeScheduler(
            policy, AdaptiveLoader(data, 8), opt, lr_scheduler=step,
            lr_scheduler_interval="step", lr_schedule_unit="samples",
        )  # fmt: skip
    with pytest.raises(ValueError, match="lr_scheduler_interval='step'"):
        BatchSizeScheduler(policy, AdaptiveLoader(data, 8), opt, lr_schedule_unit="samples")


def test_olmo_integer_factors_wait_for_a_whole_number_of_new_batches() -> None:
    policy = make_policy(
        "sample-schedule", batch_size=8, thresholds="0:8 20:32 100:16", integer_factors=True
    )
    sizes, scheduler = _run(policy, 10)
    # 24 samples pass the threshold at 20, but 24 is not a multiple of 32: wait until 32.
    # At 128 samples (past 100) the decrease to 16 applies at once.
    assert sizes == [8, 8, 8, 8, 32, 32, 32, 16, 16, 16]
    assert [(d.old_batch_size, d.new_batch_size) for d in scheduler.decisions] == [
        (8, 32), (32, 16),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="integer factor"):
        make_policy("sample-schedule", batch_size=8, thresholds="0:8 20:12", integer_factors=True)


def test_olmo_integer_factors_are_reachable_across_a_short_last_batch() -> None:
    """1000 samples in batches of 256 end in a batch of 232: the rule counts batches."""
    policy = make_policy(
        "sample-schedule", batch_size=256, thresholds="0:256 1000:512", integer_factors=True
    )
    sizes, _ = _run(policy, 8, n=1000)
    assert sizes == [256, 256, 256, 232, 512, 488, 512, 488]


def test_at_b0_throughout_the_sample_clock_steps_the_schedule_once_per_step() -> None:
    """An epoch ending in a short batch (1000 = 3·256 + 232) counts as a whole step of B₀."""
    data = TensorDataset(torch.arange(1000))
    policy = make_policy("constant", batch_size=256)

    def run(unit):
        w = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([w], lr=1.0)
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1 - t / 12))
        loader = AdaptiveLoader(data, 256, shuffle=False)
        scheduler = BatchSizeScheduler(
            policy, loader, opt, lr_scheduler=decay, lr_scheduler_interval="step",
            lr_schedule_unit=unit,
        )  # fmt: skip
        lrs = []
        for _ in range(3):
            for _batch in loader:
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                scheduler.step()
            scheduler.step_epoch()
        return lrs, scheduler

    by_samples, scheduler = run("samples")
    by_steps, _ = run("steps")
    assert by_samples == pytest.approx(by_steps)
    assert scheduler.samples == 3000 and scheduler.nominal_samples == 12 * 256


def test_a_checkpoint_without_the_sample_clock_cannot_resume_a_sample_schedule() -> None:
    policy = make_policy("sample-schedule", batch_size=8, thresholds="0:8 40:16")
    _, scheduler = _run(policy, 3)
    state = scheduler.state_dict()
    state["version"] = 2
    del state["samples"], state["nominal_samples"]
    fresh = BatchSizeScheduler(policy, AdaptiveLoader(TensorDataset(torch.arange(100_000)), 8))
    with pytest.raises(ValueError, match="before the scheduler counted samples"):
        fresh.load_state_dict(state)
    constant = make_policy("constant", batch_size=8)
    _, other = _run(constant, 3)
    old = other.state_dict()
    old["version"] = 2
    del old["samples"], old["nominal_samples"]
    data = TensorDataset(torch.arange(100_000))
    # A policy that reads no samples resumes a version-2 state.
    BatchSizeScheduler(constant, AdaptiveLoader(data, 8, shuffle=False)).load_state_dict(old)
