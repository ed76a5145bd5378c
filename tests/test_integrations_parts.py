"""The pieces under the trainer integrations, each against a simple reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from _integrations import mlp
from adabatch import GradStatsTracker
from adabatch.data import AdaptiveLoader, ResizableBatchSampler
from adabatch.integrations._feed import (
    ChunkFeed,
    DeferredBatch,
    accumulation_count,
    physical_count,
)
from adabatch.lr_coupling import StepScaledLR
from adabatch.stats import compute_stats


# ---------------------------------------------------------------- sampler: min_last_batch
def test_a_short_rest_joins_the_batch_before_it() -> None:
    sampler = ResizableBatchSampler(10, 4, shuffle=False, min_last_batch=3)
    assert [len(b) for b in sampler] == [4, 6]  # the rest of 2 < 3 joins the second batch
    sampler = ResizableBatchSampler(11, 4, shuffle=False, min_last_batch=3)
    assert [len(b) for b in sampler] == [4, 4, 3]  # a rest of 3 stays
    flat = [i for b in ResizableBatchSampler(10, 4, min_last_batch=3) for i in b]
    assert sorted(flat) == list(range(10))


def test_min_last_batch_refuses_drop_last_and_checks_the_state() -> None:
    with pytest.raises(ValueError, match="choose one"):
        ResizableBatchSampler(10, 4, drop_last=True, min_last_batch=2)
    state = ResizableBatchSampler(10, 4, min_last_batch=3).state_dict()
    with pytest.raises(ValueError, match="min_last_batch"):
        ResizableBatchSampler(10, 4).load_state_dict(state)


# ---------------------------------------------------------------- StepScaledLR
def _sgd(lr=0.1):
    w = nn.Parameter(torch.ones(3))
    return w, torch.optim.SGD([w], lr=lr)


def test_the_factor_is_applied_only_inside_the_step() -> None:
    w, opt = _sgd()
    coupling = StepScaledLR(opt, rule="linear", base_batch_size=16)
    coupling.update(64)  # ×4
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    w.grad = torch.ones(3)
    opt.step()
    assert seen == [pytest.approx(0.4)]
    torch.testing.assert_close(w.detach(), torch.full((3,), 1 - 0.4))
    assert opt.param_groups[0]["lr"] == 0.1  # between steps: the scheduler's own value
    assert coupling.lrs == [pytest.approx(0.4)]


def test_any_scheduler_steps_on_its_own_values() -> None:
    """Closed-form and chainable schedulers give lr_sched(t) · factor inside every step."""
    for make in (
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + t)),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
    ):
        w, opt = _sgd()
        reference_opt = torch.optim.SGD([nn.Parameter(torch.ones(3))], lr=0.1)
        reference = make(reference_opt)
        schedule = make(opt)
        coupling = StepScaledLR(opt, rule="sqrt", base_batch_size=16)
        coupling.update(64)  # ×2
        seen = []
        opt.register_step_pre_hook(lambda o, a, k, seen=seen: seen.append(o.param_groups[0]["lr"]))
        for _ in range(5):
            w.grad = torch.ones(3)
            want = reference_opt.param_groups[0]["lr"] * 2
            opt.step()
            schedule.step()
            reference_opt.step()
            reference.step()
            assert seen[-1] == pytest.approx(want)


def test_step_scaled_lr_refuses_bad_input_and_unwraps() -> None:
    w, opt = _sgd()

    class Wrapper:
        optimizer = opt

    assert StepScaledLR(Wrapper(), base_batch_size=8).optimizer is opt
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        StepScaledLR(object(), base_batch_size=8)
    tensor_lr = torch.optim.SGD([w], lr=torch.tensor(0.1))
    with pytest.raises(TypeError, match="tensor LR"):
        StepScaledLR(tensor_lr, base_batch_size=8)
    a = StepScaledLR(opt, rule="linear", base_batch_size=8)
    with pytest.raises(ValueError, match="rule 'linear' with B0=8"):
        StepScaledLR(_sgd()[1], rule="sqrt", base_batch_size=8).load_state_dict(a.state_dict())


# ---------------------------------------------------------------- tracker.new_pass
def test_new_pass_separates_micro_batches_that_bypass_the_root() -> None:
    """Two halves through a *submodule* (the root's forward never runs) = the whole batch."""
    model = mlp()
    holder = nn.ModuleDict({"net": model})  # the tracked root, never called itself
    x, y = torch.randn(10, 8), torch.randint(0, 3, (10,))
    expected = compute_stats(mlp(), nn.functional.cross_entropy, x, y, engine="reference")
    tracker = GradStatsTracker(holder, check_layout=False)
    for rows in (slice(0, 4), slice(4, 10)):
        weight = (rows.stop - rows.start) / 10
        with tracker.loss_weight(weight):
            tracker.new_pass()
            loss = nn.functional.cross_entropy(holder["net"](x[rows]), y[rows]) * weight
        loss.backward()
    got = tracker.pop()
    assert got.num_samples == 10
    assert math.isclose(float(got.sum_sq_norms), float(expected.sum_sq_norms), rel_tol=1e-5)
    for name in expected.grad_sum:
        torch.testing.assert_close(got.grad_sum[f"net.{name}"], expected.grad_sum[name])


# ---------------------------------------------------------------- the feed
def _loader(n=10, batch=4, **kw):
    data = TensorDataset(torch.arange(n), torch.arange(n))
    return AdaptiveLoader(data, batch, shuffle=False, **kw)


def test_deferred_batches_are_drawn_at_first_use_with_the_size_then_in_force() -> None:
    feed = ChunkFeed(_loader(), physical_count(None))
    it = iter(feed)
    first, second = next(it), next(it)  # the host reads one ahead
    assert isinstance(first, DeferredBatch) and repr(second) == "DeferredBatch(pending)"
    assert first.to("cpu")[0].tolist() == [0, 1, 2, 3]
    feed.loader.set_batch_size(6)  # a decision after the first step
    assert second.to("cpu")[0].tolist() == [4, 5, 6, 7, 8, 9]  # drawn now, at the new size
    assert list(it) == []  # nothing left: the epoch ends


def test_micro_batches_split_each_batch_and_cover_the_epoch_once() -> None:
    feed = ChunkFeed(_loader(10, 7), physical_count(3), deferred=False)
    parts = [b[0].tolist() for b in feed]
    assert parts == [[0, 1, 2], [3, 4], [5, 6], [7, 8, 9]]
    infos = list(feed.drawn)
    assert [(m.index, m.count, m.size) for m in infos] == [
        (0, 3, 3),
        (1, 3, 2),
        (2, 3, 2),
        (0, 1, 3),
    ]
    assert math.isclose(sum(m.weight for m in infos[:3]), 1.0)
    fixed = ChunkFeed(_loader(12, 6), accumulation_count(2, 4), deferred=False)
    assert [len(b[0]) for b in fixed] == [3, 3, 3, 3]


def test_a_snapshot_mid_batch_rewinds_to_its_start() -> None:
    feed = ChunkFeed(_loader(10, 4), physical_count(2), deferred=False)
    it = iter(feed)
    next(it)  # the first half of batch [0..3]
    assert feed.mid_batch
    state = feed.snapshot()
    other = ChunkFeed(_loader(10, 4), physical_count(2), deferred=False)
    other.restore(state)
    assert [b[0].tolist() for b in other] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
