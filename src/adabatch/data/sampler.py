"""A batch sampler whose batch size can change between any two batches.

`ResizableBatchSampler` walks a fixed permutation of the data set per epoch with a *cursor*:
each batch is the next ``batch_size`` positions of the permutation, and the size is read
afresh for every batch. Because a batch is a contiguous span of one permutation, every index
appears exactly once per epoch whatever sequence of resizes happens, and the whole state is
four integers (epoch, cursor, batch size, seed): a checkpoint taken between two batches
resumes exactly.

Why not mutate ``torch.utils.data.BatchSampler.batch_size``: with ``drop_last=True`` it
reads the size once per epoch, with ``drop_last=False`` once per batch, and it cannot resume
mid-epoch. Here the behaviour is the same in both cases and the state is explicit.

Distributed layout. ``batch_size`` is the *global* batch B; the epoch's permutation is the
same on every rank (it depends on ``(seed, epoch)`` only). Global batch k covers the positions
``[c, c + L)`` of the permutation (L = B, or fewer for the epoch's last batch) and rank r takes
the contiguous sub-span given by `rank_span`: the first ``L mod W`` ranks get ``⌊L/W⌋ + 1``
positions, the others ``⌊L/W⌋``. All ranks therefore yield the same number of batches — a
rank may get an *empty* batch only in a short last batch with L < W — so collective operations
stay in step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from .._seeds import derive_seed
from .._validate import as_int

__all__ = [
    "ResizableBatchSampler",
    "batches_per_epoch",
    "epoch_order",
    "epoch_seed",
    "rank_span",
]

_STATE_VERSION = 1


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


class ResizableBatchSampler:
    """Yields batches of dataset indices; the batch size may change before any batch.

    Args:
        dataset_size: number of samples N (> 0).
        batch_size: the initial (global) batch size, 1 ≤ B; a size above N is clamped to N
            with a warning (one batch is then the whole data set).
        shuffle: visit the data in a fresh random order each epoch (else 0, 1, …, N−1).
        seed: seed of the per-epoch permutations (the same on every rank).
        drop_last: skip the epoch's last batch when it is shorter than the current size.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes sharing each global batch; B must be ≥ world_size.

    Iterating yields one batch (a list of ints) at a time, for the rest of the current epoch;
    when the epoch is exhausted the sampler moves to the next epoch by itself, so
    ``for epoch in range(E): for batch in sampler: ...`` visits E different orders.
    `set_batch_size` takes effect at the next batch yielded, also during an iteration.

    Example::

        sampler = ResizableBatchSampler(len(dataset), 32, seed=0)
        for batch in sampler:            # lists of indices
            ...
            sampler.set_batch_size(64)   # the next batch has 64 indices
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        dataset_size = as_int(dataset_size, "dataset_size")
        if dataset_size <= 0:
            raise ValueError(
                f"dataset_size must be positive, got {dataset_size}: the data set is empty"
            )
        world_size = as_int(world_size, "world_size")
        rank = as_int(rank, "rank")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset_size = dataset_size
        self.shuffle = bool(shuffle)
        self.seed = as_int(seed, "seed")
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self._batch_size = self._checked_size(batch_size)
        self._epoch = 0
        self._cursor = 0  # global position in the epoch's order of the next batch
        self._order_cache: tuple[int, Tensor, list[int] | None] | None = None

    # ------------------------------------------------------------------ size and epoch
    @property
    def batch_size(self) -> int:
        """The global batch size of the next batch."""
        return self._batch_size

    @property
    def epoch(self) -> int:
        """The epoch in progress (or about to start)."""
        return self._epoch

    @property
    def cursor(self) -> int:
        """Position in the epoch's order where the next batch starts (0 ≤ cursor ≤ N)."""
        return self._cursor

    def _checked_size(self, batch_size: Any) -> int:
        size = as_int(batch_size, "batch_size")
        if size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {size}")
        if size > self.dataset_size:
            warnings.warn(
                f"batch_size {size} exceeds the data set size {self.dataset_size}; clamped "
                f"to {self.dataset_size} (each batch is the whole data set)",
                stacklevel=3,
            )
            size = self.dataset_size
        if size < self.world_size:
            if self.dataset_size < self.world_size:
                raise ValueError(
                    f"the data set has {self.dataset_size} samples, fewer than world_size "
                    f"{self.world_size}: some rank would never get a sample"
                )
            raise ValueError(
                f"batch_size {size} is smaller than world_size {self.world_size}: the global "
                "batch must give every rank at least one sample; use a batch size >= the "
                "number of processes"
            )
        return size

    def set_batch_size(self, batch_size: int) -> None:
        """Use ``batch_size`` (global) from the next batch on."""
        self._batch_size = self._checked_size(batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning — unless it is the epoch in progress.

        Setting the epoch in progress is a no-op, so the usual loop
        ``for e in range(start, E): sampler.set_epoch(e); ...`` resumes mid-epoch after
        `load_state_dict` instead of restarting the epoch.
        """
        epoch = as_int(epoch, "epoch", minimum=0)
        if epoch != self._epoch:
            self._epoch = epoch
            self._cursor = 0

    # ------------------------------------------------------------------ iteration
    def order(self, epoch: int | None = None) -> Tensor:
        """The permutation of epoch ``epoch`` (default: the current one), int64 (a copy)."""
        return self._order(self._epoch if epoch is None else epoch).clone()

    def _order(self, epoch: int) -> Tensor:
        cached = self._order_cache
        if cached is None or cached[0] != epoch:
            cached = (epoch, epoch_order(self.dataset_size, self.seed, epoch, self.shuffle), None)
            self._order_cache = cached
        return cached[1]

    def _order_list(self, epoch: int) -> list[int]:
        """The permutation as a Python list, built only when list batches are asked for.

        A Python int costs ~36 bytes against 8 in the tensor: the fast path never builds it.
        """
        order = self._order(epoch)
        cached = self._order_cache
        assert cached is not None
        if cached[2] is None:
            cached = (epoch, order, order.tolist())
            self._order_cache = cached
        return cached[2]

    def _has_batch_at(self, cursor: int) -> bool:
        """Whether an epoch position ``cursor`` still starts a batch at the current size."""
        remaining = self.dataset_size - cursor
        return remaining >= (self._batch_size if self.drop_last else 1)

    def _batch_left(self) -> bool:
        return self._has_batch_at(self._cursor)

    def _spans(self, advance: bool = True) -> Iterator[tuple[int, int, int, int, int]]:
        """Walk the epoch: ``(epoch, global_start, global_end, local_start, local_end)``.

        The state is updated *before* each span is handed out, so a checkpoint taken after
        a batch was received resumes with the following batch. With ``advance=False`` a used-up
        epoch yields nothing instead of starting the next one (the loader moves epochs itself).
        """
        if not self._batch_left():  # the previous epoch was used up
            if not advance:
                return
            self._epoch += 1
            self._cursor = 0
        while self._batch_left():
            epoch, start = self._epoch, self._cursor
            end = min(start + self._batch_size, self.dataset_size)
            lo, hi = rank_span(end - start, self.world_size, self.rank)
            self._cursor = end
            yield epoch, start, end, start + lo, start + hi
        self._epoch += 1
        self._cursor = 0

    def __iter__(self) -> Iterator[list[int]]:
        for epoch, _, _, lo, hi in self._spans():
            yield self._order_list(epoch)[lo:hi]

    def index_batches(self) -> Iterator[Tensor]:
        """Like iterating, but each batch is an int64 tensor."""
        for epoch, _, _, lo, hi in self._spans():
            yield self._order(epoch)[lo:hi].clone()  # a view would let callers edit the order

    def __len__(self) -> int:
        """Number of batches in a whole epoch at the *current* batch size."""
        return batches_per_epoch(self.dataset_size, self._batch_size, self.drop_last)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: a restored sampler yields what this one would next."""
        return {
            "version": _STATE_VERSION,
            "dataset_size": self.dataset_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "batch_size": self._batch_size,
            "epoch": self._epoch,
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output.

        The data set size, shuffle, seed and drop_last must match this sampler's (they fix the
        order); rank and world size may differ (the cursor is global), which lets a run resume
        on a different number of processes.
        """
        missing = {"dataset_size", "shuffle", "seed", "drop_last", "batch_size", "epoch", "cursor"}
        missing -= set(state)
        if missing:
            raise KeyError(f"sampler state is missing {sorted(missing)}; got keys {sorted(state)}")
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(
                f"sampler state version {state['version']} is not supported "
                f"(this adabatch reads version {_STATE_VERSION})"
            )
        for key in ("dataset_size", "shuffle", "seed", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot load a sampler state with {key}={state[key]!r} into a sampler "
                    f"with {key}={getattr(self, key)!r}: the epoch order would differ; build "
                    "the sampler with the checkpoint's settings"
                )
        epoch, cursor = as_int(state["epoch"], "epoch"), as_int(state["cursor"], "cursor")
        if epoch < 0 or not 0 <= cursor <= self.dataset_size:
            raise ValueError(
                f"invalid sampler state: epoch={epoch}, cursor={cursor} for a data set of "
                f"{self.dataset_size}"
            )
        self._batch_size = self._checked_size(state["batch_size"])
        self._epoch, self._cursor = epoch, cursor

    def __repr__(self) -> str:
        return (
            f"ResizableBatchSampler(dataset_size={self.dataset_size}, "
            f"batch_size={self._batch_size}, epoch={self._epoch}, cursor={self._cursor}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )
