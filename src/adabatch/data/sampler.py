"""A batch sampler whose batch size can change between any two batches — and the one owner of it.

`ResizableBatchSampler` walks a fixed permutation of the data set per epoch with a *cursor*:
each batch is the next ``batch_size`` positions of the permutation, and the size is read
afresh for every batch. Because a batch is a contiguous span of one permutation, every index
appears exactly once per epoch whatever sequence of resizes happens, and the whole state is a
handful of integers (epoch, cursor, batch size, seed): a checkpoint taken between two batches
resumes exactly.

NOTE [one owner]: the sampler is the only object that stores the batch size, the epoch and
the position. The loader reads them from it, the batch-size scheduler reads the size from it
and writes decisions to it, and policies receive the size as an argument.

NOTE [delivery]: the position is that of the last batch *delivered*. Iterating the sampler
delivers each batch as it is yielded (what a ``torch.utils.data.DataLoader`` given the sampler
as its ``batch_sampler`` needs). A loader that reads ahead — DataLoader workers prefetch —
walks `plan` instead, which changes nothing, and calls `commit` when a batch reaches the
training loop; a resize bumps `version`, so the loader can tell planned batches of an old
size and drop them (`adabatch.data.AdaptiveLoader`).

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

import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor

from .._types import RESIZE_AT, ResizeAt
from .._validate import as_int, check_choice
from .order import ResizeEvent, Span, batches_per_epoch, epoch_order, rank_span

__all__ = ["ResizableBatchSampler"]

log = logging.getLogger("adabatch.data")

# 1: adabatch 0.1 (no pending size, no delivered batch); 2: this one.
_STATE_VERSION = 2


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
        resize_at: "batch" (a new size applies from the next batch) or "epoch" (from the next
            epoch's start; a size set at an epoch start applies at once).
        min_last_batch: the fewest samples the epoch's last batch may have: a rest shorter
            than this joins the batch before it (which is then longer than the size). Used
            where a batch must split into a fixed number of non-empty micro-batches per rank
            (Hugging Face's gradient accumulation); 1 (default) keeps every rest.

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
        resize_at: ResizeAt = "batch",
        min_last_batch: int = 1,
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
        self.resize_at: ResizeAt = check_choice("resize_at", resize_at, RESIZE_AT)  # type: ignore[assignment]
        self.min_last_batch = as_int(min_last_batch, "min_last_batch", minimum=1)
        if self.min_last_batch > 1 and self.drop_last:
            raise ValueError(
                f"min_last_batch={self.min_last_batch} joins a short rest to the batch before "
                "it, drop_last=True drops it: choose one"
            )
        self._size = self._checked_size(batch_size)  # the size in force
        self._pending: int | None = None  # resize_at="epoch": the size from the next epoch
        self._epoch = 0
        self._cursor = 0  # position in the epoch's order of the next batch to deliver
        self._last: Span | None = None  # the last batch delivered
        self._version = 0
        self.resizes: list[ResizeEvent] = []
        self._order_cache: tuple[int, Tensor, list[int] | None] | None = None

    # ------------------------------------------------------------------ size, epoch, position
    @property
    def batch_size(self) -> int:
        """The requested global batch size (a pending ``resize_at="epoch"`` size included)."""
        return self._pending if self._pending is not None else self._size

    @property
    def epoch(self) -> int:
        """The epoch in progress (or about to start)."""
        return self._epoch

    @property
    def cursor(self) -> int:
        """Position in the epoch's order where the next batch starts (0 ≤ cursor ≤ N)."""
        return self._cursor

    @property
    def epoch_done(self) -> bool:
        """Whether the epoch in progress has delivered all its batches (at the size in force).

        True after the last batch of an epoch was delivered and before the next epoch starts,
        e.g. in a checkpoint taken right after an epoch's last step: a resumed training loop
        then finishes that epoch (evaluation, epoch-end decisions) instead of starting the next.
        """
        return not self._has_batch_at(self._cursor)

    @property
    def last(self) -> Span | None:
        """The last batch delivered (None before the first): its size, shares and position."""
        return self._last

    @property
    def version(self) -> int:
        """Increases whenever batches planned ahead become invalid (resize, new epoch, load)."""
        return self._version

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
        """Use ``batch_size`` (global) from the next batch on (or the next epoch, see resize_at)."""
        size = self._checked_size(batch_size)
        if self.resize_at == "epoch" and self._cursor > 0:
            self._pending = None if size == self._size else size
        else:
            self._set_size(size)

    def _set_size(self, size: int) -> None:
        self._pending = None
        if size != self._size:
            self._size = size
            self._version += 1

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning — unless it is the epoch in progress.

        Setting the epoch in progress is a no-op, so the usual loop
        ``for e in range(start, E): sampler.set_epoch(e); ...`` resumes mid-epoch after
        `load_state_dict` instead of restarting the epoch.
        """
        epoch = as_int(epoch, "epoch", minimum=0)
        if epoch != self._epoch:
            self._start_epoch(epoch)

    def _start_epoch(self, epoch: int) -> None:
        self._epoch, self._cursor = epoch, 0
        self._version += 1
        if self._pending is not None:
            self._set_size(self._pending)

    # ------------------------------------------------------------------ planning and delivery
    def _has_batch_at(self, cursor: int) -> bool:
        """Whether an epoch position ``cursor`` still starts a batch at the size in force."""
        remaining = self.dataset_size - cursor
        return remaining >= (self._size if self.drop_last else 1)

    def _span(self, epoch: int, cursor: int) -> Span | None:
        if not self._has_batch_at(cursor):
            return None
        end = min(cursor + self._size, self.dataset_size)
        if 0 < self.dataset_size - end < self.min_last_batch:
            end = self.dataset_size  # a too-short rest joins this batch
        lo, hi = rank_span(end - cursor, self.world_size, self.rank)
        return Span(epoch, cursor, end, cursor + lo, cursor + hi, self._size, self._version)

    def next_span(self) -> Span | None:
        """The next batch to deliver at the size in force (None: the epoch is done)."""
        return self._span(self._epoch, self._cursor)

    def plan(self) -> Iterator[Span]:
        """The rest of the epoch, read ahead from the delivered position; changes nothing.

        Each span is planned at the size in force when it is asked for; `commit` the spans in
        order as their batches are delivered.
        """
        epoch, cursor = self._epoch, self._cursor
        while (span := self._span(epoch, cursor)) is not None:
            yield span
            cursor = span.end

    def commit(self, span: Span) -> None:
        """Record that ``span``'s batch was delivered: the position moves past it."""
        if (span.epoch, span.start) != (self._epoch, self._cursor):
            raise RuntimeError(
                f"batch {span} delivered out of order: the sampler is at epoch {self._epoch}, "
                f"position {self._cursor}"
            )
        previous = self._last
        if previous is not None and span.size != previous.size:
            event = ResizeEvent(
                span.epoch, span.start, previous.size, span.size, span.global_length
            )
            self.resizes.append(event)
            log.info(
                "batch size %d -> %d from epoch %d, position %d (this batch: %d samples)",
                event.old_size,
                event.new_size,
                event.epoch,
                event.position,
                event.first_batch,
            )
        self._cursor, self._last = span.end, span
        log.debug(
            "epoch %d position %d: batch of %d (%d here)",
            span.epoch,
            span.start,
            span.global_length,
            span.local_length,
        )

    def start_next_epoch_if_done(self) -> None:
        """Move to the next epoch when the one in progress has delivered all its batches."""
        if self.epoch_done:
            self._start_epoch(self._epoch + 1)

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

    def indices(self, span: Span) -> Tensor:
        """This rank's dataset indices of ``span`` (an int64 view of the epoch's order)."""
        return self._order(span.epoch)[span.lo : span.hi]

    def index_list(self, span: Span) -> list[int]:
        """The same as a list of ints (built only when list batches are asked for).

        A Python int costs ~36 bytes against 8 in the tensor: the tensor path never builds it.
        """
        self._order(span.epoch)
        cached = self._order_cache
        assert cached is not None
        if cached[2] is None:
            cached = (cached[0], cached[1], cached[1].tolist())
            self._order_cache = cached
        return cached[2][span.lo : span.hi]

    def _deliver_all(self) -> Iterator[Span]:
        """Deliver the rest of the epoch, each batch as it is handed out, then move on."""
        self.start_next_epoch_if_done()  # the previous epoch was used up
        while (span := self.next_span()) is not None:
            self.commit(span)
            yield span
        self._start_epoch(self._epoch + 1)

    def __iter__(self) -> Iterator[list[int]]:
        for span in self._deliver_all():
            yield self.index_list(span)

    def index_batches(self) -> Iterator[Tensor]:
        """Like iterating, but each batch is an int64 tensor."""
        for span in self._deliver_all():
            yield self.indices(span).clone()  # a view would let callers edit the order

    def __len__(self) -> int:
        """Number of batches in a whole epoch at the requested batch size."""
        return batches_per_epoch(self.dataset_size, self.batch_size, self.drop_last)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: a restored sampler delivers what this one would next."""
        return {
            "version": _STATE_VERSION,
            "dataset_size": self.dataset_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
            "min_last_batch": self.min_last_batch,
            "batch_size": self._size,
            "pending_batch_size": self._pending,
            "epoch": self._epoch,
            "cursor": self._cursor,
            "last": None if self._last is None else list(self._last[:6]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output.

        The data set size, shuffle, seed and drop_last must match this sampler's (they fix the
        order); rank and world size may differ (the cursor is global), which lets a run resume
        on a different number of processes (this rank's share of the last batch is then
        recomputed).
        """
        version = state.get("version")
        if version != _STATE_VERSION:
            raise ValueError(
                f"sampler state version {version!r} is not supported: this adabatch reads "
                f"version {_STATE_VERSION} (version 1 was written by adabatch 0.1; resume such "
                "a run with adabatch 0.1, or start it again)"
            )
        required = {"dataset_size", "shuffle", "seed", "drop_last", "batch_size", "epoch", "cursor"}
        missing = sorted(required - set(state))
        if missing:
            raise KeyError(f"sampler state is missing {missing}; got keys {sorted(state)}")
        for key in ("dataset_size", "shuffle", "seed", "drop_last", "min_last_batch"):
            if state.get(key, 1) != getattr(self, key):  # min_last_batch: 1 before it existed
                raise ValueError(
                    f"cannot load a sampler state with {key}={state.get(key, 1)!r} into a sampler "
                    f"with {key}={getattr(self, key)!r}: the epoch order would differ; build "
                    "the sampler with the checkpoint's settings"
                )
        epoch, cursor = as_int(state["epoch"], "epoch"), as_int(state["cursor"], "cursor")
        if epoch < 0 or not 0 <= cursor <= self.dataset_size:
            raise ValueError(
                f"invalid sampler state: epoch={epoch}, cursor={cursor} for a data set of "
                f"{self.dataset_size}"
            )
        self._size = self._checked_size(state["batch_size"])
        pending = state.get("pending_batch_size")
        self._pending = None if pending is None else self._checked_size(pending)
        self._epoch, self._cursor = epoch, cursor
        self._last = None
        if (last := state.get("last")) is not None:
            ep, start, end, _lo, _hi, size = (int(x) for x in last)
            lo, hi = rank_span(end - start, self.world_size, self.rank)  # this rank's share
            self._last = Span(ep, start, end, start + lo, start + hi, size, self._version + 1)
        self._version += 1

    def __repr__(self) -> str:
        return (
            f"ResizableBatchSampler(dataset_size={self.dataset_size}, "
            f"batch_size={self.batch_size}, epoch={self._epoch}, cursor={self._cursor}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
            f"rank={self.rank}, world_size={self.world_size}, resize_at={self.resize_at!r})"
        )
