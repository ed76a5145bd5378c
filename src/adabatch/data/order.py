"""The pure layout of an epoch: its order, the batches' spans, each rank's share of a batch.

Everything here is a function of a few integers — the data set size, the run's seed, the epoch,
the batch size, the number of ranks — so every rank and every resumed run computes the same
layout. `adabatch.data.ResizableBatchSampler` walks it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._seeds import derive_seed

__all__ = [
    "ResizeEvent",
    "Span",
    "batches_per_epoch",
    "epoch_order",
    "epoch_seed",
    "rank_span",
]


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of epoch ``epoch`` of a run seeded ``seed`` (`derive_seed`).

    A plain ``seed + epoch`` (what ``DistributedSampler`` does) would give run ``seed=1`` the
    permutations of run ``seed=0`` shifted by one epoch.
    """
    return derive_seed(seed, epoch)


def epoch_order(dataset_size: int, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The order in which epoch ``epoch`` visits ``range(dataset_size)`` (an int64 tensor).

    A function of ``(dataset_size, seed, epoch, shuffle)`` only: every rank and every resumed
    run computes the same order.
    """
    if not shuffle:
        return torch.arange(dataset_size, dtype=torch.int64)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(dataset_size, generator=generator, dtype=torch.int64)


def rank_span(length: int, world_size: int, rank: int) -> tuple[int, int]:
    """The ``[start, end)`` offsets, within a global batch of ``length``, that ``rank`` takes.

    The first ``length mod world_size`` ranks take ``⌊length/world_size⌋ + 1`` samples, the
    rest ``⌊length/world_size⌋``; spans are contiguous and in rank order, so they partition
    ``[0, length)``.
    """
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def batches_per_epoch(dataset_size: int, batch_size: int, drop_last: bool) -> int:
    """Batches in a whole epoch at a fixed ``batch_size`` (a short last one unless dropped)."""
    full, rest = divmod(dataset_size, batch_size)
    return full + (1 if rest and not drop_last else 0)


class Span(NamedTuple):
    """One batch: positions ``[start, end)`` of epoch ``epoch``'s order, this rank's ``[lo, hi)``.

    ``size`` is the batch size in force when the batch was planned (``end - start`` is smaller
    for an epoch's short last batch); ``version`` is the sampler's `version` then.
    """

    epoch: int
    start: int
    end: int
    lo: int
    hi: int
    size: int
    version: int

    @property
    def global_length(self) -> int:
        """Samples in the global batch (all ranks)."""
        return self.end - self.start

    @property
    def local_length(self) -> int:
        """Samples this rank holds."""
        return self.hi - self.lo


class ResizeEvent(NamedTuple):
    """The first batch delivered at a new requested size: where, the sizes, its real length.

    ``first_batch`` can be below ``new_size`` when fewer samples were left in the epoch.
    """

    epoch: int
    position: int  # position in the epoch's order where that batch starts
    old_size: int
    new_size: int
    first_batch: int  # global number of samples the batch really had
