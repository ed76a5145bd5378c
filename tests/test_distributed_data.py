"""Two gloo processes: rank slices, lockstep resizes, DDP + micro-batching = one big batch."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adabatch.data import AdaptiveLoader, MicroBatcher, ResizableBatchSampler, accumulate_gradients
from adabatch.datasets import ArrayDataset
from adabatch.distributed import all_reduce_int

pytestmark = pytest.mark.distributed

WORLD = 2
N = 13  # batches of 5, 7 (resized), 1: rank 1's share of the last batch is empty


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    from _dist import exit_worker

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        _check(rank)
        # Every DDP object is gone (it lived in _check) and both ranks are done before the
        # group is destroyed: tearing it down under a live reducer can abort the process.
        dist.barrier()
        open(os.path.join(out_dir, f"ok{rank}"), "w").close()
    finally:
        dist.destroy_process_group()
    exit_worker()


def _check(rank: int) -> None:
    from _compare import close

    torch.manual_seed(0)  # the same model and data on every rank
    x = torch.randn(N, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (N,))
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    reference = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    loader = AdaptiveLoader(ArrayDataset(x, y), 5, seed=3)  # rank, world from dist
    assert (loader.sampler.rank, loader.world_size) == (rank, WORLD)
    whole = ResizableBatchSampler(N, 5, seed=3)  # the global batches, on one process
    whole_iter = iter(whole)
    seen = []
    for step, (xb, yb) in enumerate(loader):
        global_idx = torch.tensor(next(whole_iter))
        seen.append(len(yb))
        ddp.zero_grad()

        def loss_of(batch, weight=loader.loss_weight):
            return nn.functional.cross_entropy(ddp(batch[0]), batch[1]) * weight

        accumulate_gradients(loss_of, (xb, yb), max_physical_batch_size=2, model=ddp)
        # p.grad is the mean gradient of the *global* batch, whatever the local split.
        reference.zero_grad()
        nn.functional.cross_entropy(reference(x[global_idx]), y[global_idx]).backward()
        for p, q in zip(ddp.module.parameters(), reference.parameters(), strict=True):
            close(p.grad, q.grad, 1e-12, f"step {step}")
        if step == 0:  # every rank resizes at the same step: they stay in step
            loader.set_batch_size(7)
            whole.set_batch_size(7)
    assert all_reduce_int(len(seen), "min") == all_reduce_int(len(seen), "max") == 3
    assert seen == ([3, 4, 1] if rank == 0 else [2, 3, 0])
    assert MicroBatcher(ddp).probe_on_oom is False  # no OOM recovery under DDP
    with pytest.raises(ValueError, match=r"not supported under torch\.distributed"):
        MicroBatcher(ddp, probe_on_oom=True)


def test_loader_and_micro_batching_under_ddp(tmp_path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()
