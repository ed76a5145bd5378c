"""Two gloo processes: the per-rank two-batch noise-scale estimate from a DDP comm hook.

Each rank's local gradient (before the all-reduce) and the global one give the two-batch
estimator its two sizes. The result must equal `parts_estimates` computed on one process from
the same shards (one tracker pass per shard), with unequal shares, and DDP's gradients must be
exactly those without the hook.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from _dist import run_on_ranks
from adabatch.distributed import RankGradNorms
from adabatch.stats import GradStatsTracker, parts_estimates

pytestmark = pytest.mark.distributed

WORLD = 2
SHARES = (slice(0, 3), slice(3, 8))  # 3 and 5 samples: unequal, so the loss weights matter


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (8,), generator=g)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _ddp_norms(rank: int, out_dir: str) -> dict[str, Any]:
    x, y = _data()
    share = SHARES[rank]
    n = share.stop - share.start
    weight = n * WORLD / 8  # AdaptiveLoader.loss_weight: DDP's average is the global mean
    plain = DistributedDataParallel(_model())
    hooked = DistributedDataParallel(_model())
    norms = RankGradNorms()
    hooked.register_comm_hook(norms, norms.hook)
    for net in (plain, hooked):
        (F.cross_entropy(net(x[share]), y[share]) * weight).backward()
    estimates = norms.estimates(hooked, loss_weight=weight, local_size=n)
    same = all(
        torch.equal(a.grad, b.grad)
        for a, b in zip(plain.parameters(), hooked.parameters(), strict=True)
    )
    del plain, hooked
    return {"estimates": estimates, "same_grads": same}


def test_rank_norms_match_the_parts_estimate(tmp_path) -> None:
    results = run_on_ranks(_ddp_norms, tmp_path, world=WORLD)
    assert all(r["same_grads"] for r in results)  # the hook leaves DDP's gradients alone
    assert results[0]["estimates"] == results[1]["estimates"]  # every rank agrees

    x, y = _data()
    model = _model()
    parts = []
    with GradStatsTracker(copy.deepcopy(model)) as tracker:
        for share in SHARES:
            tracker.model.zero_grad()
            F.cross_entropy(tracker.model(x[share]), y[share]).backward()
            parts.append(tracker.pop())
    expected = parts_estimates(parts)
    assert results[0]["estimates"] == pytest.approx(expected, rel=1e-9)


def test_without_a_backward_it_says_how_to_register():
    with pytest.raises(RuntimeError, match="register_comm_hook"):
        RankGradNorms().pop_local_sq_norm()
