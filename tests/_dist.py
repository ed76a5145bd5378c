"""Shared by the two-process tests: run a function on gloo ranks, and how a worker ends."""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def exit_worker() -> None:
    """End a spawned worker that finished its checks, skipping interpreter finalisation.

    After ``destroy_process_group`` a worker that returns normally runs Python's shutdown,
    during which gloo's background threads can still be torn down and abort the process
    ("terminate called without an active exception", SIGABRT) — seen in about 1 run in 15
    on a loaded 2-core machine, always after every check had passed. Exiting with
    ``os._exit(0)`` skips that teardown; a failing check still raises before this point, so
    ``mp.spawn`` reports it as usual.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_on_ranks(
    fn: Callable[..., Any], out_dir: str | Path, *args: Any, world: int = 2
) -> list[Any]:
    """``fn(rank, out_dir, *args)`` on ``world`` gloo processes; each rank's return value.

    ``fn`` must be a module-level function (the spawned processes import it by name) and must
    release its DDP objects before returning: the group is torn down after a barrier.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out_dir = Path(out_dir)
    mp.spawn(_entry, args=(fn, str(out_dir), world, args), nprocs=world, join=True)
    return [pickle.loads((out_dir / f"rank{r}.pkl").read_bytes()) for r in range(world)]


def init_group(rank: int, out_dir: str, world: int, timeout: float = 60.0) -> None:
    """Join the gloo group of ``out_dir``'s file store, one thread per process.

    A short timeout: a collective that one rank never joins fails instead of hanging.
    """
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(out_dir, 'init')}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout),
    )


def _entry(rank: int, fn: Callable[..., Any], out_dir: str, world: int, args: tuple) -> None:
    init_group(rank, out_dir, world)
    try:
        result = fn(rank, out_dir, *args)
        # Tearing the group down under a live DDP reducer can abort the process: every DDP
        # object is gone (collected with its reference cycles) and both ranks are done first.
        gc.collect()
        dist.barrier()
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(result, f)
    finally:
        dist.destroy_process_group()
    exit_worker()
