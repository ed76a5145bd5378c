"""Two gloo processes: all-reduced statistics equal the single-process statistics of the union."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adabatch.distributed import all_reduce_stats, is_distributed, rank, world_size
from adabatch.stats import (
    GradStats,
    GradStatsTracker,
    compute_stats,
    inner_product_variance,
    orthogonal_variance,
)

pytestmark = pytest.mark.distributed

WORLD = 2


def _worker(rank_: int, init_file: str) -> None:
    # Imported here: the spawned process imports this module by name.
    from _compare import assert_stats_close, close
    from _dist import exit_worker
    from _models import SmallCNN

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank_, world_size=WORLD)
    try:
        assert is_distributed() and rank() == rank_ and world_size() == WORLD
        torch.manual_seed(0)  # the same model and data on every rank
        model = SmallCNN().double()
        x = torch.randn(6, 3, 6, 6, dtype=torch.float64)
        y = torch.randint(0, 4, (6,))
        shards = [(x[r::WORLD], y[r::WORLD]) for r in range(WORLD)]
        opts = dict(loss_reduction="sum", inner_products=True, coordinates=True)
        loss_sum = nn.CrossEntropyLoss(reduction="sum")

        local = compute_stats(copy.deepcopy(model), loss_sum, *shards[rank_], **opts)
        merged = all_reduce_stats(local)

        # Additive fields: exactly those of the whole batch on one process.
        whole = compute_stats(copy.deepcopy(model), loss_sum, x, y, engine="reference", **opts)
        assert merged.num_samples == whole.num_samples == 6
        for name in whole.grad_sum:
            close(merged.grad_sum[name], whole.grad_sum[name], 1e-9, name)
            close(merged.coord_sq_sum[name], whole.coord_sq_sum[name], 1e-9, name)
        close(merged.sum_sq_norms, whole.sum_sq_norms, 1e-9, "S2")
        # P2 pools per rank: the same as merging the shards' statistics on one process.
        shard_stats = [
            compute_stats(copy.deepcopy(model), loss_sum, sx, sy, engine="reference", **opts)
            for sx, sy in shards
        ]
        pooled = sum(shard_stats)
        assert_stats_close(merged, pooled)
        # The per-tensor ("layerwise") inner-product sums add over ranks like P2.
        for field in ("layer_inner_sum", "layer_norm4_sum", "layer_ratio_sum"):
            expected = sum(getattr(s, field) for s in shard_stats)
            close(getattr(merged, field), expected, 1e-9, field)
        for fn in (inner_product_variance, orthogonal_variance):
            expected_v = fn(pooled, mode="layerwise")
            assert abs(fn(merged, mode="layerwise") - expected_v) <= 1e-9 * abs(expected_v)

        # A rank with an empty shard joins the collective with GradStats.empty.
        if rank_ == 0:
            mine = compute_stats(copy.deepcopy(model), loss_sum, x, y, **opts)
        else:
            params = dict(model.named_parameters())
            mine = GradStats.empty(params, inner_products=True, coordinates=True)
        total = all_reduce_stats(mine)
        assert total.num_groups == 1
        assert_stats_close(total, whole)
        assert total.layer_inner_sum is not None and whole.layer_inner_sum is not None
        close(total.layer_ratio_sum, whole.layer_ratio_sum, 1e-9, "layer_ratio_sum")

        # Under DDP the tracker still reports local statistics while p.grad is the global mean.
        ddp = DistributedDataParallel(copy.deepcopy(model))
        with GradStatsTracker(ddp.module) as tracker:
            nn.CrossEntropyLoss()(ddp(shards[rank_][0]), shards[rank_][1]).backward()
            tracked = tracker.pop()
        expected_local = compute_stats(
            copy.deepcopy(model), nn.CrossEntropyLoss(), *shards[rank_], engine="reference"
        )
        assert_stats_close(tracked, expected_local)
        full = copy.deepcopy(model)
        nn.CrossEntropyLoss()(full(x), y).backward()
        for p_ddp, p_full in zip(ddp.module.parameters(), full.parameters(), strict=True):
            close(p_ddp.grad, p_full.grad, 1e-9, "DDP p.grad")
        # Tearing the group down under a live DDP reducer can abort the process.
        del ddp
        dist.barrier()
    finally:
        dist.destroy_process_group()
    exit_worker()


def test_all_reduce_matches_single_process(tmp_path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(tmp_path / "init"),), nprocs=WORLD, join=True)


def test_without_process_group_stats_pass_through() -> None:
    model = nn.Linear(3, 2)
    stats = compute_stats(
        model, nn.CrossEntropyLoss(), torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    )
    assert all_reduce_stats(stats) is stats
    assert not is_distributed() and rank() == 0 and world_size() == 1
