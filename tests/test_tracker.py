"""GradStatsTracker in a plain PyTorch loop: the user keeps writing loss.backward()."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from _compare import assert_grads_close, assert_stats_close
from _models import SmallCNN, mlp
from adabatch.stats import GradStatsTracker, compute_stats


def data(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(
        0, 4, (b,), generator=g
    )


def test_training_loop_reads_each_batch() -> None:
    model = SmallCNN().double()
    oracle = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_oracle = torch.optim.SGD(oracle.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    tracker = GradStatsTracker(model, inner_products=True)
    for step in range(3):
        x, y = data(5, seed=step)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        stats = tracker.pop()
        opt.step()
        opt_oracle.zero_grad()
        expected = compute_stats(oracle, loss_fn, x, y, engine="reference", inner_products=True)
        opt_oracle.step()
        assert_stats_close(stats, expected)
    assert_grads_close(model, oracle)
    tracker.remove()


def test_micro_batches_between_pops_merge() -> None:
    model = SmallCNN().double()
    loss_fn = nn.CrossEntropyLoss()
    x, y = data(7)
    chunks = [(x[:4], y[:4]), (x[4:], y[4:])]
    expected = sum(
        compute_stats(
            copy.deepcopy(model), loss_fn, cx, cy, engine="reference", inner_products=True
        )
        for cx, cy in chunks
    )
    with GradStatsTracker(model, inner_products=True) as tracker:
        for cx, cy in chunks:
            loss_fn(model(cx), cy).backward()
        merged = tracker.pop()
    assert merged.num_samples == 7 and merged.num_groups == 2
    assert_stats_close(merged, expected)


def test_pop_without_backward_raises_and_eval_forwards_are_dropped() -> None:
    model = mlp().double()
    tracker = GradStatsTracker(model)
    with pytest.raises(RuntimeError, match=r"call loss\.backward"):
        tracker.pop()
    model(torch.randn(3, 5, dtype=torch.float64))  # an evaluation forward under grad mode
    x = torch.randn(4, 5, dtype=torch.float64)
    model(x).sum().backward()
    assert tracker.pop().num_samples == 4
    with torch.no_grad():
        model(x)
    with pytest.raises(RuntimeError):
        tracker.pop()
    tracker.remove()


def test_paused_and_remove_leave_the_model_untouched() -> None:
    model = mlp().double()
    plain = copy.deepcopy(model)
    tracker = GradStatsTracker(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    with tracker.paused():
        model(x).sum().backward()
    with pytest.raises(RuntimeError):
        tracker.pop()
    tracker.remove()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    model.zero_grad()
    model(x).sum().backward()
    plain(x).sum().backward()
    assert_grads_close(model, plain)


def test_exception_inside_a_module_restores_requires_grad() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))  # wrong shapes: the 2nd layer raises
    tracker = GradStatsTracker(model)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3))
    assert all(p.requires_grad for p in model.parameters())
    tracker.remove()


def test_layer_that_changes_the_batch_dimension_is_refused() -> None:
    class Folding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(-1, 4))  # (b, T, 4) folded into (b·T, 4)

    model = Folding()
    tracker = GradStatsTracker(model)
    with pytest.raises(ValueError, match="do not keep the batch where the hooks engine reads it"):
        model(torch.randn(3, 5, 4))
    tracker.remove()


def test_loss_scale_of_sum_reduction() -> None:
    """With loss_reduction='sum' the hooks see gᵢ itself; the stats equal the reference."""
    model = mlp().double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    loss = nn.CrossEntropyLoss(reduction="sum")
    expected = compute_stats(
        copy.deepcopy(model), loss, x, y, engine="reference", loss_reduction="sum"
    )
    with GradStatsTracker(model, loss_reduction="sum") as tracker:
        loss(model(x), y).backward()
        assert_stats_close(tracker.pop(), expected)


def test_bad_tracker_arguments() -> None:
    model = mlp()
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        GradStatsTracker(model, loss_reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback must be one of"):
        GradStatsTracker(model, fallback="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        GradStatsTracker(model, batchnorm="eval")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_block_bytes must be >= 1"):
        GradStatsTracker(model, max_block_bytes=0)
