"""Merging statistics across ``torch.distributed`` ranks.

Every field of `GradStats` except P2 is a sum over samples, so the statistics of the global
batch are the element-wise sum over ranks: one ``all_reduce(SUM)`` per dtype (the gradient
sums in the parameters' dtype, the scalars in float64 so that counts stay exact). P2 and its
bookkeeping also add, which makes the global P2 the *pooled* one: each rank's projections are
taken along its local mean (see `adabatch.stats.summary`, NOTE [merged P2]); so do the
per-tensor ("layerwise") inner-product sums (NOTE [layerwise]).

Decisions taken from the reduced statistics are then identical on every rank, because every
rank holds the same numbers: no broadcast is needed.

Without an initialised process group the functions return their input unchanged, so the same
training loop runs on one process.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import Tensor

from ..stats.summary import SCALAR_FIELDS, GradStats

__all__ = [
    "all_reduce_int",
    "all_reduce_stats",
    "all_reduce_sum",
    "is_distributed",
    "rank",
    "world_size",
]

# The optional 0-dim float64 fields of GradStats (S2 is always there); each adds across ranks.
_OPTIONAL_SCALARS = tuple(name for name in SCALAR_FIELDS if name != "sum_sq_norms")


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def all_reduce_int(value: int, op: str = "min", group: dist.ProcessGroup | None = None) -> int:
    """``value`` reduced over the ranks with ``op`` ("min", "max" or "sum"); itself alone.

    For decisions every rank must share (the physical batch that fits everywhere, a check
    that all ranks requested the same batch size).
    """
    ops = {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    if not is_distributed():
        return int(value)
    # NCCL reduces only accelerator tensors; gloo and the others take CPU tensors.
    nccl = dist.get_backend(group) == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=ops[op], group=group)
    return int(tensor.item())


def all_reduce_stats(stats: GradStats, group: dist.ProcessGroup | None = None) -> GradStats:
    """Sum ``stats`` over the ranks of ``group``: the statistics of the global batch.

    Every rank must call it with statistics over the same parameters and options. Sparse
    gradient sums are densified first (``all_reduce`` has no sparse form).
    """
    if not is_distributed():
        return stats
    names = list(stats.grad_sum)
    coord_names = list(stats.coord_sq_sum) if stats.coord_sq_sum is not None else []
    tensors = [_dense(stats.grad_sum[n]) for n in names]
    if stats.coord_sq_sum is not None:
        tensors += [_dense(stats.coord_sq_sum[n]) for n in coord_names]
    device = tensors[0].device if tensors else stats.sum_sq_norms.device

    optional: dict[str, Tensor] = {
        name: value for name in _OPTIONAL_SCALARS if (value := getattr(stats, name)) is not None
    }
    scalars = torch.stack(
        [
            torch.tensor(float(stats.num_samples), dtype=torch.float64, device=device),
            torch.tensor(float(stats.num_groups), dtype=torch.float64, device=device),
            stats.sum_sq_norms.to(device=device, dtype=torch.float64),
            *[t.to(device=device, dtype=torch.float64) for t in optional.values()],
        ]
    )
    reduced = all_reduce_sum([*tensors, scalars], group)
    scalars = reduced.pop()
    grads = dict(zip(names, reduced[: len(names)], strict=True))
    coords = (
        dict(zip(coord_names, reduced[len(names) :], strict=True))
        if stats.coord_sq_sum is not None
        else None
    )
    optional_fields = {name: scalars[3 + k] for k, name in enumerate(optional)}
    return dataclasses.replace(
        stats,
        num_samples=round(float(scalars[0])),
        num_groups=round(float(scalars[1])),
        grad_sum=grads,
        sum_sq_norms=scalars[2],
        coord_sq_sum=coords,
        **optional_fields,
    )


def _dense(t: Tensor) -> Tensor:
    return t.to_dense() if t.is_sparse else t


def all_reduce_sum(tensors: list[Tensor], group: dist.ProcessGroup | None = None) -> list[Tensor]:
    """All-reduce (sum) a list of tensors with one collective per dtype; returns new tensors.

    The statistics' sums and local SGD's parameter averages go through it: one flat buffer
    per dtype, so the number of collectives does not grow with the number of tensors.
    """
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    out: list[Tensor | None] = [None] * len(tensors)
    for indices in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        offset = 0
        for i in indices:
            n = tensors[i].numel()
            out[i] = flat[offset : offset + n].view_as(tensors[i])
            offset += n
    return [t for t in out if t is not None]
