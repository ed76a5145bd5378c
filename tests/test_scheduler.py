"""BatchSizeScheduler in a plain loop: cadence, resizing, LR coupling, checkpoints, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from adabatch import BatchSizeScheduler
from adabatch.data import AdaptiveLoader, ResizableBatchSampler
from adabatch.datasets import ArrayDataset
from adabatch.policies import NormTest, SchedulePolicy, make_policy
from adabatch.stats import GradStatsTracker


def dataset(n: int = 300, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return ArrayDataset(x, (x @ torch.randn(6, 3, generator=g)).argmax(1), num_classes=3)


def setup(policy, *, lr_rule="sqrt", scheduler_factory=None, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = AdaptiveLoader(dataset(), policy.batch_size, seed=seed)
    lr_sched = None if scheduler_factory is None else scheduler_factory(optimizer)
    sched = BatchSizeScheduler(policy, loader, optimizer, lr_rule=lr_rule, lr_scheduler=lr_sched)
    tracker = GradStatsTracker(model, **sched.tracker_options)
    return model, optimizer, loader, sched, tracker


def train(model, optimizer, loader, sched, tracker, *, epochs, stop_after=None, log=None):
    """The README loop, with a record of each step; returns early after ``stop_after`` steps."""
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(sched.epoch, epochs):
        for inputs, targets in loader:
            optimizer.zero_grad()
            wanted = sched.wants_stats
            with sched.measure(tracker):
                loss_fn(model(inputs), targets).backward()
            if log is not None:
                log.append(
                    dict(
                        size=len(inputs),
                        policy_size=sched.batch_size,
                        lr=optimizer.param_groups[0]["lr"],
                        wanted=wanted,
                        passes=tracker.num_passes,
                    )
                )
            optimizer.step()
            sched.step()
            if stop_after is not None and sched.step_count == stop_after:
                return
        sched.step_epoch()


def test_readme_loop_grows_the_batch_and_couples_the_lr():
    policy = NormTest(4, eta=0.4, interval=2, max_batch_size=128)
    model, optimizer, loader, sched, tracker = setup(policy)
    log: list[dict] = []
    train(model, optimizer, loader, sched, tracker, epochs=3, log=log)
    assert sched.batch_size > 4 and sched.decisions
    seen_per_epoch: dict[int, int] = {}
    epoch = 0
    for i, row in enumerate(log):
        # Every batch has the size in force (the epoch's last batch may be shorter).
        assert row["size"] <= row["policy_size"]
        # Statistics only on the steps the policy asked for (every second step).
        assert row["wanted"] == (i % 2 == 0 and row["policy_size"] < 128)
        assert row["passes"] == 0  # popped inside measure, or never recorded
        # lr = 0.05 · √(B/B₀) with B the size in force for this step.
        assert row["lr"] == pytest.approx(0.05 * math.sqrt(row["policy_size"] / 4))
        seen_per_epoch[epoch] = seen_per_epoch.get(epoch, 0) + row["size"]
        if seen_per_epoch[epoch] == 300:
            epoch += 1
    assert seen_per_epoch == {0: 300, 1: 300, 2: 300}  # every sample once per epoch
    short = [r for r in log if r["size"] != r["policy_size"]]
    assert len(short) <= 3  # only each epoch's last batch


def test_decisions_apply_from_the_next_batch():
    policy = NormTest(4, eta=0.5, max_batch_size=256)
    model, optimizer, loader, sched, tracker = setup(policy, lr_rule="none")
    log: list[dict] = []
    train(model, optimizer, loader, sched, tracker, epochs=1, log=log)
    assert len(sched.decisions) >= 3
    for d in sched.decisions:
        assert log[d.step]["size"] == d.old_batch_size  # the batch the decision came from
        if d.step + 1 < len(log) - 1:  # not the epoch's (possibly short) last batch
            assert log[d.step + 1]["size"] == d.new_batch_size


def test_schedule_and_lr_scheduler_at_epoch_ends():
    policy = SchedulePolicy(10, factor=2, every=1, lr_factor=0.5, max_batch_size=80)
    model, optimizer, loader, sched, tracker = setup(
        policy,
        lr_rule="linear",
        scheduler_factory=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.1),
    )
    sizes, lrs = [], []
    for _ in range(4):
        train(model, optimizer, loader, sched, tracker, epochs=sched.epoch + 1)
        sizes.append(loader.batch_size)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert sizes == [20, 40, 80, 80]
    # lr = 0.05 · StepLR(2, 0.1) · (B/10) · 0.5^(epochs resized)
    expected = [0.05 * 0.1 ** ((e + 1) // 2) * (sizes[e] / 10) * 0.5 ** (e + 1) for e in range(4)]
    assert lrs == pytest.approx(expected)
    assert not tracker.num_passes  # a schedule never asks for statistics


@pytest.mark.parametrize("name", ["norm-test", "divebatch"])
def test_checkpoint_resume_equals_an_uninterrupted_run(name):
    config = {
        "norm-test": dict(batch_size=4, eta=0.3, max_batch_size=64),
        "divebatch": dict(batch_size=4, dataset_size=300, max_batch_size=64, delta=0.3, every=1),
    }[name]
    steplr = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.9)  # noqa: E731

    whole = setup(make_policy(name, **config), scheduler_factory=steplr)
    train(*whole, epochs=3)

    half = whole[3].step_count // 2
    first = setup(make_policy(name, **config), scheduler_factory=steplr)
    train(*first, epochs=3, stop_after=half)
    assert first[2].sampler.cursor > 0  # stopped inside an epoch
    model, optimizer, _, sched, _ = first
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": optimizer.state_dict(), "bss": sched.state_dict()},
        buffer,
    )
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)

    second = setup(make_policy(name, **config), scheduler_factory=steplr)
    model2, optimizer2, loader2, sched2, tracker2 = second
    model2.load_state_dict(state["model"])
    optimizer2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["bss"])
    assert sched2.step_count == half and loader2.batch_size == sched2.batch_size
    train(model2, optimizer2, loader2, sched2, tracker2, epochs=3)

    assert sched2.step_count == whole[3].step_count
    assert sched2.decisions == whole[3].decisions
    assert optimizer2.param_groups[0]["lr"] == whole[1].param_groups[0]["lr"]
    for a, b in zip(model2.parameters(), whole[0].parameters(), strict=True):
        assert torch.equal(a, b)


def test_works_with_a_bare_sampler_and_no_optimizer():
    policy = SchedulePolicy(10, factor=3, every=1)
    sampler = ResizableBatchSampler(100, 10)
    sched = BatchSizeScheduler(policy, sampler)
    assert sched.policy.cap == 100  # bound to the sampler's data set size
    sched.step_epoch()
    sched.step_epoch()
    assert sampler.batch_size == 90 and sched.lr_coupling is None
    sched.step_epoch()
    assert sampler.batch_size == 100


def test_measure_drops_passes_from_outside_the_step():
    policy = NormTest(4, eta=0.3)
    model, _optimizer, loader, sched, tracker = setup(policy)
    x, y = next(iter(loader))
    model(x).sum().backward()  # e.g. a probe outside the step: must not enter the stats
    with sched.measure(tracker):
        nn.CrossEntropyLoss()(model(x), y).backward()
    window = sched.state_dict()["window"]
    assert window["kind"] == "grad-stats" and tracker.num_passes == 0
    assert window["value"]["num_samples"] == len(x) and window["value"]["num_groups"] == 1


def test_errors():
    policy = NormTest(8, eta=0.3)
    sampler = ResizableBatchSampler(100, 16)
    with pytest.raises(ValueError, match=r"loader's batch size \(16\) differs from the policy's"):
        BatchSizeScheduler(policy, sampler)
    with pytest.raises(TypeError, match="loader must be resizable"):
        BatchSizeScheduler(policy, [1, 2, 3])
    with pytest.raises(TypeError, match="policy must be a BatchSizePolicy"):
        BatchSizeScheduler("norm-test", ResizableBatchSampler(100, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the optimizer"):
        BatchSizeScheduler(policy, ResizableBatchSampler(100, 8), lr_rule="linear")
    with pytest.raises(ValueError, match="lr_scheduler_interval must be 'epoch' or 'step'"):
        BatchSizeScheduler(policy, ResizableBatchSampler(100, 8), lr_scheduler_interval="batch")
    with pytest.raises(ValueError, match="configured for dataset_size=50"):
        BatchSizeScheduler(NormTest(8, dataset_size=50), ResizableBatchSampler(100, 8))
    with pytest.raises(ValueError, match="resize_at='epoch'"):
        BatchSizeScheduler(NormTest(8), AdaptiveLoader(dataset(), 8, resize_at="epoch"))
    # Epoch-cadence policies are fine with epoch-start resizes.
    BatchSizeScheduler(SchedulePolicy(8), AdaptiveLoader(dataset(), 8, resize_at="epoch"))
    with pytest.raises(ValueError, match=r"version None is not supported.*adabatch 0\.1"):
        BatchSizeScheduler(NormTest(8), ResizableBatchSampler(100, 8)).load_state_dict(
            {"policy": NormTest(8).state_dict(), "step_count": 0}  # a 0.1 checkpoint's shape
        )


def test_repr_and_state():
    sched = BatchSizeScheduler(NormTest(8), ResizableBatchSampler(100, 8))
    assert repr(sched).startswith("BatchSizeScheduler(NormTest(") and "step 0" in repr(sched)
    state = sched.state_dict()
    assert state["step_count"] == 0 and state["policy"]["name"] == "norm-test"
    assert state["sampler"]["batch_size"] == 8 and state["lr"] is None


def test_reduce_on_plateau_gets_its_metric_and_a_failing_scheduler_keeps_the_lr():
    policy = SchedulePolicy(10, factor=2, every=1)
    _, optimizer, _, sched, _ = setup(
        policy,
        lr_rule="linear",
        scheduler_factory=lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, factor=0.5, patience=0
        ),
    )
    sched.step_epoch(1.0)  # B 10 → 20: lr 0.05 · 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    sched.step_epoch(2.0)  # worse: plateau halves the unscaled LR; B → 40
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025 * 4)
    with pytest.raises(TypeError):
        sched.step_epoch()  # ReduceLROnPlateau needs its metric
    # The failed scheduler step left the scaled LR in place (B is now 80: ×8).
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025 * 8)
    sched.step_epoch(3.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0125 * 16)


def test_lr_scheduler_stepped_every_step():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.05)
    lr_sched = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    sched = BatchSizeScheduler(
        NormTest(4, eta=0.3, max_batch_size=64),
        AdaptiveLoader(dataset(), 4, seed=0),
        optimizer,
        lr_rule="linear",
        lr_scheduler=lr_sched,
        lr_scheduler_interval="step",
    )
    for _ in range(5):
        optimizer.step()
        sched.step()
    assert sched.lr_coupling.unscaled_lrs == pytest.approx([0.05 * 0.9**5])
    sched.step_epoch()  # no extra scheduler step at the epoch end
    assert sched.lr_coupling.unscaled_lrs == pytest.approx([0.05 * 0.9**5])


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", ["adadagrad-norm", "adadagrad"])
def test_presets_build_and_train(name):
    from adabatch.optim import AdaGradNorm
    from adabatch.presets import PRESETS

    preset = PRESETS[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    optimizer, policy = preset.build(model.parameters(), lr=0.05, batch_size=4, eta=0.5)
    expected = torch.optim.Adagrad if name == "adadagrad" else AdaGradNorm
    assert type(optimizer) is expected and policy.name == preset.policy
    loader = AdaptiveLoader(dataset(), policy.batch_size, seed=0)
    sched = BatchSizeScheduler(policy, loader, optimizer, lr_rule=preset.lr_rule)
    tracker = GradStatsTracker(model, **sched.tracker_options)
    train(model, optimizer, loader, sched, tracker, epochs=2)
    assert sched.batch_size > 4
    assert optimizer.param_groups[0]["lr"] == 0.05  # AdaGrad-type: no LR coupling


def test_preset_overrides():
    from adabatch.presets import PRESETS

    model = nn.Linear(3, 2)
    optimizer, policy = PRESETS["adadagrad-norm"].build(
        model.parameters(),
        lr=0.1,
        batch_size=2,
        optimizer_options={"mode": "rowwise"},
        eta=0.2,
        max_batch_size=64,
    )
    assert optimizer.param_groups[0]["mode"] == "rowwise"
    assert policy.eta == 0.2 and policy.max_batch_size == 64
    with pytest.raises(ValueError, match="unknown option"):
        PRESETS["adadagrad"].build(model.parameters(), lr=0.1, batch_size=2, etaa=1)
