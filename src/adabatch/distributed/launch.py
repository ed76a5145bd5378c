"""Starting ``torch.distributed`` from the environment ``torchrun`` sets up.

``torchrun --nproc_per_node=N script.py`` starts N processes and gives each one ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. `init_from_env` reads them,
picks the backend (NCCL for CUDA devices, gloo otherwise), binds the process to its GPU and
initialises the default process group with a timeout on every collective, so that a rank that
never arrives ends the run with an error instead of a hang. Outside torchrun it initialises
nothing and describes a single process, so the same script runs either way::

    env = init_from_env()                    # rank, world size, backend, device
    train(env)                               # wrap_model(...) and the loop, in a function
    shutdown()                               # once the wrapped model is released

`shutdown` destroys the group this module initialised (and nothing it did not).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
from collections.abc import Mapping

import torch
import torch.distributed as dist

from .._validate import check_choice, check_positive

__all__ = ["BACKENDS", "DistributedEnv", "init_from_env", "launched_by_torchrun", "shutdown"]

#: Values of ``backend``: "auto" chooses NCCL for CUDA devices and gloo for the CPU.
BACKENDS: tuple[str, ...] = ("auto", "gloo", "nccl")

# The variables torchrun (and torch.distributed.launch) set in every worker.
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

_initialised_here = False  # whether shutdown() owns the default group


@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """This process's place in the run.

    Attributes:
        rank: global rank (0 for a single process).
        local_rank: rank on this machine (which GPU it uses).
        world_size: number of processes (1 for a single process).
        backend: the process group's backend, or None without a process group.
        device: the device this rank computes on.
    """

    rank: int
    local_rank: int
    world_size: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group connects several processes."""
        return self.backend is not None


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by ``torchrun`` (its variables are all set)."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in _TORCHRUN_VARS)


def _env_int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"the environment variable {name} must be an integer, got {value!r} (torchrun sets "
            "it; launch with torchrun --nproc_per_node=N ...)"
        ) from None


def _device_for(backend: str, local_rank: int, device: str) -> torch.device:
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        if backend == "nccl":
            raise ValueError(
                "backend 'nccl' needs CUDA devices, and this process has none (or device is "
                "'cpu'): use backend 'gloo' or 'auto'"
            )
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} needs CUDA, which is not available; use 'cpu'")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(
            f"local rank {local_rank} has no GPU of its own ({count} visible): start at most "
            f"{count} processes per machine (torchrun --nproc_per_node={count})"
        )
    return torch.device("cuda", local_rank)


def init_from_env(
    backend: str = "auto", *, device: str = "auto", timeout_s: float = 600.0
) -> DistributedEnv:
    """Initialise the default process group from torchrun's environment; describe this process.

    Args:
        backend: "auto" (NCCL on CUDA, gloo on the CPU), "gloo" or "nccl".
        device: "auto" (the GPU of this local rank when CUDA is available, else the CPU),
            "cpu" or "cuda".
        timeout_s: seconds a collective may wait for the other ranks before it fails (a rank
            that died or raised then ends the whole run instead of hanging it).

    Returns:
        The `DistributedEnv`. A group that is already initialised (by your own code) is used as
        it is; outside torchrun, with no group, nothing is initialised: rank 0 of 1.

    Raises:
        ValueError: an unknown backend, NCCL without CUDA, more ranks than GPUs, or torchrun's
            variables malformed.
    """
    global _initialised_here
    check_choice("backend", backend, BACKENDS)
    check_choice("device", device, ("auto", "cpu", "cuda"))
    check_positive("timeout_s", timeout_s)
    if dist.is_available() and dist.is_initialized():
        actual = dist.get_backend()
        if backend != "auto" and actual != backend:
            raise ValueError(
                f"the process group is already initialised with backend {actual!r}, not the "
                f"requested {backend!r}"
            )
        local = int(os.environ.get("LOCAL_RANK", 0))
        if actual == "nccl" or device == "cuda":
            dev = torch.device("cuda", torch.cuda.current_device())
        else:
            dev = torch.device("cpu")  # a gloo group: CPU tensors, unless told otherwise
        return DistributedEnv(dist.get_rank(), local, dist.get_world_size(), actual, dev)
    if not launched_by_torchrun():
        dev = _device_for("gloo", 0, device)
        if dev.type == "cuda":
            dev = torch.device("cuda", torch.cuda.current_device())
        return DistributedEnv(0, 0, 1, None, dev)
    environ = os.environ
    rank, world = _env_int(environ, "RANK"), _env_int(environ, "WORLD_SIZE")
    local = _env_int(environ, "LOCAL_RANK")
    if backend == "auto":
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
    if backend == "gloo" and device == "cuda":
        raise ValueError("backend 'gloo' with device 'cuda': use backend 'nccl' (or 'auto')")
    dev = _device_for(backend, local, "cpu" if backend == "gloo" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=dev if dev.type == "cuda" else None,
    )
    _initialised_here = True
    return DistributedEnv(rank, local, world, backend, dev)


def shutdown() -> None:
    """Destroy the default process group if `init_from_env` created it (else do nothing).

    Call it once the DDP/FSDP-wrapped models are released (return from the function that
    trained first): a DistributedDataParallel still alive when the group goes makes the
    process abort at exit (SIGABRT, "terminate called without an active exception"), and
    torchrun then reports the finished run as failed. Unreachable wrappers held by reference
    cycles are collected here first.
    """
    global _initialised_here
    if _initialised_here and dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _initialised_here = False
