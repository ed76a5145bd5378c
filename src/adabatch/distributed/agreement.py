"""Checking at run time that every rank took the same decision.

Every rank computes its decision from the same all-reduced statistics, so the decisions agree
by construction — unless something differs between the ranks that should not: a policy or
configuration, a data set size, a nondeterministic reduction, a code change on one machine. A
silent disagreement would leave the ranks with different batch sizes, and the next collective
would hang or mix unrelated tensors. `check_agreement` makes it loud: the ranks all-reduce the
maximum of (v, −v) for each value — one small collective — and every rank learns whether the
maximum and the minimum coincide.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import torch
import torch.distributed as dist

from ..errors import RankMismatchError
from .collectives import is_distributed, rank

__all__ = ["as_int64", "check_agreement"]


def as_int64(value: float | int | None) -> int:
    """An exact integer image of ``value`` (a float's bits; None as the smallest int64)."""
    if value is None:
        return -(2**63) + 1  # negated it still fits
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def check_agreement(
    values: Sequence[float | int | None],
    what: str,
    names: Sequence[str] | None = None,
    group: dist.ProcessGroup | None = None,
) -> None:
    """Raise `RankMismatchError` on every rank unless all ranks passed equal ``values``.

    Args:
        values: what must agree (integers, floats compared bit for bit, None).
        what: what they describe, for the message ("the decision at step 12").
        names: a name per value, for the message.
        group: the process group (default: the world). Without one this does nothing.
    """
    if not is_distributed():
        return
    codes = [as_int64(v) for v in values]
    nccl = dist.get_backend(group) == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    both = torch.tensor(codes + [-c for c in codes], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    high, low = both[: len(codes)].tolist(), [-x for x in both[len(codes) :].tolist()]
    differ = [k for k in range(len(codes)) if high[k] != low[k]]
    if differ:
        labels = names or [f"value {k}" for k in range(len(codes))]
        mine = ", ".join(f"{labels[k]}={values[k]!r}" for k in differ)
        raise RankMismatchError(
            f"the ranks disagree on {what}: rank {rank()} has {mine}. Every rank must run the "
            "same configuration and code on the same data (check the arguments, the data set "
            "files and the adabatch version of each process)"
        )
