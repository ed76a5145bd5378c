"""Two gloo processes: adaptive policies decide alike on every rank, and as one process would.

`BatchSizeScheduler` all-reduces the statistics of each decision's window, so every rank
feeds its policy the same numbers and takes the same decisions without any broadcast. Each
rank records what its scheduler did (batch sizes, LRs, decisions, final parameters); the
ranks' records must be identical, and equal to a single-process run over the same global
batches.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from _dist import run_on_ranks
from adabatch import AdaptiveLoader, BatchSizeScheduler, GradStatsTracker, make_policy
from adabatch.data.order import rank_span
from adabatch.datasets import ArrayDataset
from adabatch.distributed import all_reduce_int

pytestmark = pytest.mark.distributed

WORLD = 2
EPOCHS = 2
# Odd on purpose: DiveBatch's epoch 0 at its initial batch of 4 ends with a global batch of 1
# (257 = 64·4 + 1), so rank 1's share is empty and it joins the collectives with nothing.
N = 257

# id → (policy, options)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "norm-test": ("norm-test", dict(batch_size=4, eta=0.5, max_batch_size=128)),
    "divebatch": (
        "divebatch",
        dict(batch_size=4, dataset_size=N, max_batch_size=128, every=1, delta=0.5),
    ),
    "augmented-global": (
        "augmented-inner-product",
        dict(batch_size=4, theta=0.5, nu=0.5, mode="global", max_batch_size=128),
    ),
    "augmented-layerwise-auto": (
        "augmented-inner-product",
        dict(batch_size=4, epsilon=0.5, mode="layerwise", max_batch_size=128),
    ),
}
# Under DDP, P2 and the layerwise sums are pooled per rank (each rank's inner products use its
# own local mean), so the single-process reference for the policies that read them takes one
# backward pass per rank's share of the batch (the tracker merges passes the same way); the
# others take the global batch in one pass.
PER_SHARD = {"augmented-global", "augmented-layerwise-auto"}


def _dataset() -> ArrayDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 6, generator=g, dtype=torch.float64)
    teacher = torch.randn(6, 3, generator=g, dtype=torch.float64)
    noise = 0.5 * torch.randn(N, 3, generator=g, dtype=torch.float64)
    return ArrayDataset(x, (x @ teacher + noise).argmax(1), num_classes=3)


def _backward(net: nn.Module, tracker: GradStatsTracker, xb, yb, weight: float) -> None:
    """The batch's backward, its mean loss times ``weight`` (`AdaptiveLoader.loss_weight`)."""
    if len(yb) == 0:
        # An empty share: zero gradients, but the backward runs so DDP's all-reduce does too.
        loss = torch.nan_to_num(F.cross_entropy(net(xb), yb), nan=0.0) * 0.0
    else:
        with tracker.loss_weight(weight):
            loss = F.cross_entropy(net(xb), yb) * weight
    loss.backward()


def _backward_per_shard(model: nn.Module, tracker: GradStatsTracker, xb, yb) -> None:
    """One process, one pass per rank's share: the gradient of the global batch's mean loss."""
    total = len(yb)
    for r in range(WORLD):
        lo, hi = rank_span(total, WORLD, r)
        if hi > lo:
            _backward(model, tracker, xb[lo:hi], yb[lo:hi], (hi - lo) / total)


def _check_lockstep(scheduler: BatchSizeScheduler, distributed: bool) -> None:
    """Fail at once, on every rank, if the ranks' batch sizes diverge.

    A read-only check (the decisions never see it): ranks that disagreed would take different
    numbers of steps and leave one of them waiting in DDP's all-reduce instead of failing.
    """
    if distributed:
        size = scheduler.batch_size
        low, high = all_reduce_int(size, "min"), all_reduce_int(size, "max")
        assert low == high, f"ranks diverged after step {scheduler.step_count}: {low} vs {high}"


def _run(case: str, *, distributed: bool) -> dict[str, Any]:
    """Train ``EPOCHS`` epochs under policy ``CASES[case]``; return what the scheduler did."""
    torch.manual_seed(0)  # the same initial model on every rank and in the reference
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    name, options = CASES[case]
    policy = make_policy(name, **options)
    rank, world = (dist.get_rank(), WORLD) if distributed else (0, 1)
    loader = AdaptiveLoader(_dataset(), policy.batch_size, seed=3, rank=rank, world_size=world)
    scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt")
    tracker = GradStatsTracker(model, **scheduler.tracker_options)
    net = DistributedDataParallel(model) if distributed else model
    record: dict[str, list[Any]] = {"sizes": [], "global": [], "local": [], "lrs": []}
    for _ in range(EPOCHS):
        for xb, yb in loader:
            record["sizes"].append(scheduler.batch_size)
            record["global"].append(loader.last_global_batch_size)
            record["local"].append(len(yb))
            record["lrs"].append(optimizer.param_groups[0]["lr"])
            optimizer.zero_grad()
            with scheduler.measure(tracker):
                if case in PER_SHARD and not distributed:
                    _backward_per_shard(model, tracker, xb, yb)
                else:
                    _backward(net, tracker, xb, yb, loader.loss_weight)
            optimizer.step()
            scheduler.step()
            _check_lockstep(scheduler, distributed)
        scheduler.step_epoch()
        _check_lockstep(scheduler, distributed)
    tracker.remove()
    del net  # release the DDP reducer before the process group goes (see _dist.run_on_ranks)
    state = scheduler.state_dict()
    return {
        **record,
        "decisions": state["decisions"],
        "policy": state["policy"],
        "policy_state": state["policy_state"],
        "warned": state["warned"],
        "counters": (state["step_count"], state["epoch"], scheduler.batch_size),
        "resizes": list(loader.resizes),
        "params": [p.detach().clone() for p in model.parameters()],
    }


def _ddp_cases(rank: int, out_dir: str) -> dict[str, dict[str, Any]]:
    return {case: _run(case, distributed=True) for case in CASES}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, dict[str, Any]]]:
    """Every rank's records of every case, from one two-process run."""
    return run_on_ranks(_ddp_cases, tmp_path_factory.mktemp("ddp_policies"), world=WORLD)


def _shared(record: dict[str, Any]) -> dict[str, Any]:
    """What every rank must agree on: all but its own share sizes and the tensors."""
    return {k: v for k, v in record.items() if k not in ("local", "params")}


@pytest.mark.parametrize("case", list(CASES))
def test_ranks_take_identical_decisions(ranks, case: str) -> None:
    first, *others = (records[case] for records in ranks)
    for other in others:
        # Exact: the ranks hold the same all-reduced sums, so every float is the same too.
        assert _shared(other) == _shared(first)
        for p, q in zip(other["params"], first["params"], strict=True):
            assert torch.equal(p, q)
    # The shares partition each global batch.
    assert [sum(n) for n in zip(*(r[case]["local"] for r in ranks), strict=True)] == first["global"]
    # The batch grew, mid-run: some steps ran at a larger size than the initial one.
    initial = CASES[case][1]["batch_size"]
    assert first["decisions"], "no decision: the run does not exercise the policy"
    assert all(d["new_batch_size"] > d["old_batch_size"] for d in first["decisions"])
    assert max(first["sizes"]) > initial
    assert first["lrs"][0] == 0.1
    for size, lr in zip(first["sizes"], first["lrs"], strict=True):
        assert lr == pytest.approx(0.1 * math.sqrt(size / initial), rel=1e-12)
    if case == "divebatch":  # a global batch of 1: rank 1 stepped with an empty share
        assert 0 in ranks[1][case]["local"]


@pytest.mark.parametrize("case", list(CASES))
def test_distributed_run_matches_single_process(ranks, case: str) -> None:
    ddp = ranks[0][case]
    single = _run(case, distributed=False)
    assert single["global"] == single["local"] == ddp["global"]
    assert single["sizes"] == ddp["sizes"]
    assert single["resizes"] == ddp["resizes"]
    assert single["counters"] == ddp["counters"]
    assert single["lrs"] == pytest.approx(ddp["lrs"], rel=1e-12)
    assert len(single["decisions"]) == len(ddp["decisions"])
    for mine, theirs in zip(single["decisions"], ddp["decisions"], strict=True):
        exact = ("step", "epoch", "old_batch_size", "new_batch_size", "statistic", "lr_factor")
        assert {k: mine[k] for k in exact} == {k: theirs[k] for k in exact}
        # The statistic is the same number up to summation order (all-reduce vs one pass).
        assert mine["value"] == pytest.approx(theirs["value"], rel=1e-9)
        assert mine["suggested"] == pytest.approx(theirs["suggested"], rel=1e-9)
    assert single["policy"] == ddp["policy"]  # the same bound configuration
    assert single["counters"][2] == ddp["counters"][2]  # the same final batch size
    assert single["warned"] == ddp["warned"]
    assert single["policy_state"] == pytest.approx(ddp["policy_state"], rel=1e-9)
    for p, q in zip(single["params"], ddp["params"], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
