"""Micro-batching gives the one-big-batch gradient; the OOM probe finds what fits, once."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _compare import assert_stats_close, close
from adabatch.data import (
    MicroBatcher,
    accumulate_gradients,
    batch_length,
    is_out_of_memory,
    probe_max_batch_size,
    split_batch,
)
from adabatch.stats import GradStatsTracker, compute_stats

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def model_and_batch(n: int = 37):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(n, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, x, y


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("chunk", [1, 5, 8, 36, 37, 100, None])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_accumulated_gradient_equals_the_big_batch_gradient(chunk, reduction):
    model, x, y = model_and_batch(37)  # 37 = 4·8 + 5 with chunk 8: unequal chunks
    big = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    expected_loss = loss_fn(big(x), y)
    expected_loss.backward()

    def loss_of(batch):
        return loss_fn(model(batch[0]), batch[1])

    loss = accumulate_gradients(
        loss_of, (x, y), max_physical_batch_size=chunk, loss_reduction=reduction
    )
    close(loss, expected_loss.detach(), 1e-12, "loss")
    for g, p in zip(grads(model), big.parameters(), strict=True):
        close(g, p.grad, 1e-12, "grad")


def test_accumulation_adds_to_existing_gradients():
    model, x, y = model_and_batch(10)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), y).backward()
    once = grads(model)
    accumulate_gradients(lambda b: loss_fn(model(b[0]), b[1]), (x, y), max_physical_batch_size=3)
    for g, p in zip(once, model.parameters(), strict=True):
        close(p.grad, 2 * g, 1e-12, "grad")


def test_tracker_statistics_of_the_logical_batch():
    model, x, y = model_and_batch(23)
    loss_fn = nn.CrossEntropyLoss()
    expected = compute_stats(
        copy.deepcopy(model),
        loss_fn,
        x,
        y,
        engine="reference",
        inner_products=True,
        coordinates=True,
    )
    with GradStatsTracker(model, inner_products=True, coordinates=True) as tracker:
        accumulate_gradients(
            lambda b: loss_fn(model(b[0]), b[1]),
            (x, y),
            max_physical_batch_size=6,
            tracker=tracker,
        )
        stats = tracker.pop()
    assert stats.num_samples == 23 and stats.num_groups == 4
    # Additive fields equal the whole batch's; P2 is pooled per chunk (documented).
    close(stats.sum_sq_norms, expected.sum_sq_norms, 1e-10, "S2")
    for name, g in expected.grad_sum.items():
        close(stats.grad_sum[name], g, 1e-10, name)
        close(stats.coord_sq_sum[name], expected.coord_sq_sum[name], 1e-10, name)
    pooled = sum(
        compute_stats(
            copy.deepcopy(model),
            loss_fn,
            c.batch[0],
            c.batch[1],
            engine="reference",
            inner_products=True,
            coordinates=True,
        )
        for c in split_batch((x, y), 6)
    )
    assert_stats_close(stats, pooled)


def test_tracker_loss_weight_validation():
    model, _, _ = model_and_batch(2)
    with GradStatsTracker(model) as tracker:
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="finite number >= 0"), tracker.loss_weight(bad):
                pass


def test_zero_loss_weight_on_an_empty_share_gives_empty_statistics():
    """A DDP rank whose share of a short batch is empty backpropagates with weight 0."""
    model, x, y = model_and_batch(4)
    with GradStatsTracker(model, inner_products=True) as tracker:
        with tracker.loss_weight(0.0):
            out = model(x[:0])
            loss = nn.functional.cross_entropy(out, y[:0], reduction="sum") * 0.0
        loss.backward()
        stats = tracker.pop()
    assert stats.num_samples == 0
    assert float(stats.sum_sq_norms) == 0.0 and float(stats.sum_sq_inner) == 0.0
    assert all(torch.count_nonzero(g) == 0 for g in stats.grad_sum.values())


def test_zero_loss_weight_with_samples_is_refused():
    model, x, y = model_and_batch(4)
    with GradStatsTracker(model) as tracker:
        with tracker.loss_weight(0.0):
            loss = nn.functional.cross_entropy(model(x), y) * 0.0
        with pytest.raises(ValueError, match="loss weight of 0 on a pass of 4 samples"):
            loss.backward()


def test_empty_batch_runs_backward_with_zero_gradients():
    model, x, y = model_and_batch(4)
    loss = accumulate_gradients(
        lambda b: nn.functional.cross_entropy(model(b[0]), b[1]), (x[:0], y[:0])
    )
    assert loss.item() == 0.0
    for p in model.parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 60), size=st.integers(1, 70))
def test_split_batch_covers_in_near_equal_chunks(n, size):
    x = torch.arange(n)
    chunks = split_batch({"x": x, "pair": (x * 2, [x + 1])}, size)
    assert torch.cat([c.batch["x"] for c in chunks]).tolist() == list(range(n))
    assert torch.cat([c.batch["pair"][1][0] for c in chunks]).tolist() == list(range(1, n + 1))
    sizes = [c.size for c in chunks]
    assert max(sizes) <= max(size, 0) or n == 0
    assert max(sizes) - min(sizes) <= 1
    assert len(chunks) == max(1, -(-n // size))
    if n:
        assert sum(c.weight for c in chunks) == pytest.approx(1.0)


def test_split_sparse_csr_rows():
    dense = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0], [0.0, 0.0, 0.0], [4.0, 5.0, 6.0]])
    chunks = split_batch((dense.to_sparse_csr(), torch.arange(4)), 3)
    assert [c.size for c in chunks] == [2, 2]
    assert torch.equal(chunks[1].batch[0].to_dense(), dense[2:])


def test_batch_length_errors():
    assert batch_length((torch.zeros(3, 2), [torch.zeros(3)], "label")) == 3
    with pytest.raises(ValueError, match=r"first dimensions \[2, 3\]"):
        batch_length((torch.zeros(3), torch.zeros(2)))
    with pytest.raises(ValueError, match="no tensor"):
        batch_length(["a", "b"])
    with pytest.raises(ValueError, match=r"max_size must be >= 1 \(or None\)"):
        split_batch(torch.zeros(5), 0)


def test_loss_must_be_a_scalar():
    model, x, y = model_and_batch(4)
    with pytest.raises(ValueError, match="scalar loss tensor"):
        accumulate_gradients(
            lambda b: nn.functional.cross_entropy(model(b[0]), b[1], reduction="none"), (x, y)
        )


# ---------------------------------------------------------------------- out of memory
@settings(max_examples=30, deadline=None)
@given(threshold=st.integers(1, 300), start=st.integers(1, 300), limit=st.integers(1, 300))
def test_probe_finds_the_exact_threshold(threshold, start, limit):
    tried = []

    def try_batch(b):
        tried.append(b)
        if b > threshold:
            raise OOM("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    found = probe_max_batch_size(try_batch, start=start, limit=limit)
    assert found == min(threshold, limit)
    assert len(tried) <= 2 * (limit.bit_length() + 1) + 2  # logarithmic, not linear
    assert all(1 <= b <= limit for b in tried)


def test_probe_errors():
    def never(b):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="even at a physical batch size of 1"):
        probe_max_batch_size(never, start=4, limit=8)

    def broken(b):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):  # not an OOM: propagates
        probe_max_batch_size(broken, start=4, limit=8)
    with pytest.raises(ValueError, match="need start >= 1"):
        probe_max_batch_size(lambda b: None, start=0, limit=8)
    with pytest.raises(TypeError, match=r"limit must be an int, got float 7\.5"):
        probe_max_batch_size(lambda b: None, start=1, limit=7.5)


def test_is_out_of_memory():
    assert is_out_of_memory(OOM("CUDA out of memory"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory")
    )
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not a runtime failure


class Budget:
    """A loss that 'runs out of memory' for chunks above a size, like a device would."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        self.model, self.limit, self.calls = model, limit, []

    def __call__(self, batch):
        x, y = batch
        self.calls.append(len(x))
        out = self.model(x)
        if len(x) > self.limit:
            raise OOM(f"CUDA out of memory (simulated at {len(x)})")
        return nn.functional.cross_entropy(out, y)


def test_micro_batcher_probes_once_and_then_micro_batches():
    model, x, y = model_and_batch(64)
    big = copy.deepcopy(model)
    pre = [torch.full_like(p, 0.5) for p in model.parameters()]
    for p, g in zip(model.parameters(), pre, strict=True):
        p.grad = g.clone()  # existing gradients must survive a failed attempt
    with GradStatsTracker(model) as tracker:
        micro = MicroBatcher(model, tracker=tracker)
        loss_of = Budget(model, limit=13)
        loss = micro.backward(loss_of, (x[:40], y[:40]))
        stats = tracker.pop()
    assert micro.max_physical_batch_size == 13 and micro.probes == 1
    assert stats.num_samples == 40  # the failed attempt's statistics were discarded
    expected = nn.functional.cross_entropy(big(x[:40]), y[:40])
    expected.backward()
    close(loss, expected.detach(), 1e-12, "loss")
    for p, q, g in zip(model.parameters(), big.parameters(), pre, strict=True):
        close(p.grad, q.grad + g, 1e-12, "grad")

    # A later, larger batch is micro-batched at the size found: no new probe, no failure.
    loss_of.calls.clear()
    model.zero_grad()
    micro.backward(loss_of, (x, y))
    assert micro.probes == 1 and max(loss_of.calls) <= 13 and sum(loss_of.calls) == 64
    assert micro.state_dict() == {"max_physical_batch_size": 13, "largest_run": 13}


def test_micro_batcher_passes_other_errors_and_validates():
    model, x, y = model_and_batch(8)

    def bad(batch):
        raise KeyError("oops")

    with pytest.raises(KeyError, match="oops"):
        MicroBatcher(model).backward(bad, (x, y))
    with pytest.raises(ValueError, match=r"max_physical_batch_size must be >= 1 \(or None\)"):
        MicroBatcher(model, max_physical_batch_size=0)
    micro = MicroBatcher(model, probe_on_oom=False)
    with pytest.raises(OOM):
        micro.backward(Budget(model, 4), (x, y))


def test_oom_while_growing_keeps_existing_gradients_and_earlier_statistics():
    """The normal growth case: a size ran before, a larger one fails, gradients pre-exist."""
    model, x, y = model_and_batch(64)
    reference = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero_grad(set_to_none=False)
    with GradStatsTracker(model) as tracker:
        micro = MicroBatcher(model, tracker=tracker)
        budget = Budget(model, limit=20)
        micro.backward(budget, (x[:16], y[:16]))  # fits: 16 becomes the known size
        micro.backward(budget, (x[16:56], y[16:56]))  # 40 fails; the probe starts at 32
        stats = tracker.pop()
    assert micro.max_physical_batch_size == 20 and micro.probes == 1
    assert stats.num_samples == 56  # the first batch's statistics survived the failure
    for chunk in ((x[:16], y[:16]), (x[16:56], y[16:56])):
        loss_fn(reference(chunk[0]), chunk[1]).backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        close(p.grad, q.grad, 1e-12, "grad after recovery")


def test_tracker_with_an_empty_batch_and_nested_weights():
    model, x, y = model_and_batch(12)
    loss_fn = nn.CrossEntropyLoss()
    with GradStatsTracker(model) as tracker:
        accumulate_gradients(lambda b: loss_fn(model(b[0]), b[1]), (x[:0], y[:0]), tracker=tracker)
        empty = tracker.pop()  # an empty share: the neutral element, not an error
        assert empty.num_samples == 0 and float(empty.sum_sq_norms) == 0.0
        # An outer weight (e.g. the loader's DDP loss_weight) times each chunk's weight.
        expected = compute_stats(copy.deepcopy(model), loss_fn, x, y, engine="reference")
        with tracker.loss_weight(0.75):
            accumulate_gradients(
                lambda b: loss_fn(model(b[0]), b[1]) * 0.75,
                (x, y),
                max_physical_batch_size=5,
                tracker=tracker,
            )
        stats = tracker.pop()
    close(stats.sum_sq_norms, expected.sum_sq_norms, 1e-10, "S2 under nested weights")


def test_reduction_must_match_the_tracker():
    model, x, y = model_and_batch(4)
    with GradStatsTracker(model, loss_reduction="mean") as tracker:
        with pytest.raises(ValueError, match="loss_reduction='mean' but the loss is declared"):
            accumulate_gradients(
                lambda b: b[0].sum(), (x, y), loss_reduction="sum", tracker=tracker
            )
        with pytest.raises(ValueError, match="declared 'sum'"):
            MicroBatcher(model, loss_reduction="sum", tracker=tracker)
    with pytest.raises(ValueError, match="loss_reduction must be one of 'mean', 'sum'; got 'avg'"):
        MicroBatcher(model, loss_reduction="avg")


def test_split_batch_splits_per_sample_lists():
    names = [f"s{i}" for i in range(5)]
    chunks = split_batch({"x": torch.arange(5), "name": names}, 2)
    assert [c.batch["name"] for c in chunks] == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    np = pytest.importorskip("numpy")
    assert len(split_batch(torch.zeros(6), np.int64(4))) == 2
    with pytest.raises(ValueError, match=r"max_size must be >= 1 \(or None\), got 0"):
        split_batch(torch.zeros(3), 0)  # checked even when the batch would fit
