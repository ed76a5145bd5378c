"""`AdaptiveLoader`: a data loader whose batch size changes while training runs.

It drives a `ResizableBatchSampler` on one of two paths:

* **Tensor fast path** — for in-memory data sets that can gather a whole batch from one index
  tensor (``torch.utils.data.TensorDataset`` and anything with a ``gather(indices)`` method,
  such as `adabatch.datasets.ArrayDataset`): one indexing operation per batch instead of
  ``len(batch)`` calls to ``__getitem__`` and a collate. Used automatically when there are no
  workers and no custom collate function.
* **DataLoader path** — everything else: a ``torch.utils.data.DataLoader`` with the sampler as
  its ``batch_sampler`` (workers, ``pin_memory``, custom collate).

When does a resize take effect? ``resize_at="batch"`` (default): the very next batch the
caller receives has the new size. On the DataLoader path with workers, the DataLoader has
already sent up to ``prefetch_factor × num_workers`` batches of the old size to the workers;
those are dropped and the sampler is rewound to the first sample not yet delivered, then the
worker iterator is restarted (cheap with ``persistent_workers=True``, the default here with
workers). Nothing is skipped or repeated: the epoch still visits every sample once.
``resize_at="epoch"`` defers every resize to the start of the next epoch (no refetch ever).

Each delivered batch's real size is recorded (`last_batch_size`, `last_global_batch_size`)
and the first batch of every new size is logged on the ``adabatch.data`` logger and appended
to `resizes` — feed the policy the real size, not the requested one.

The loader stores no batch size and no position: they are the sampler's (NOTE [one owner] in
`adabatch.data.sampler`), which records the position of the last batch *delivered* — not the
workers' read-ahead — so a checkpoint taken between two batches resumes exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from .._types import ResizeAt
from ._batch import map_tensors, slice_rows
from .order import ResizeEvent, Span
from .rows import take_rows
from .sampler import ResizableBatchSampler

__all__ = ["AdaptiveLoader", "ResizeAt", "ResizeEvent", "has_fast_path"]

_ENDED = object()  # marks an iteration ended by set_epoch / load_state_dict


def has_fast_path(dataset: Any) -> bool:
    """Whether ``dataset`` can gather a batch from one index tensor (see module docstring)."""
    return callable(getattr(dataset, "gather", None)) or isinstance(dataset, TensorDataset)


def _gather(dataset: Any, indices: Tensor) -> Any:
    if callable(getattr(dataset, "gather", None)):
        return dataset.gather(indices)
    return tuple(take_rows(t, indices) for t in dataset.tensors)


class _EmptySafeCollate:
    """A collate function that also handles an empty batch (a rank's share of a short batch).

    The default collate cannot build an empty batch (it takes shapes from the first sample),
    so an empty batch is the collate of sample 0 cut to zero samples (`slice_rows`): same
    structure, dtypes and trailing shapes as every other batch. This assumes the collate puts
    the sample dimension first.
    """

    def __init__(self, dataset: Dataset, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.collate_fn = collate_fn

    def __call__(self, samples: list[Any]) -> Any:
        if samples:
            return self.collate_fn(samples)
        return slice_rows(self.collate_fn([self.dataset[0]]), 0, 0, n=1)


class _SpanRecorder:
    """The DataLoader's ``batch_sampler``: the sampler's plan, with a record of each span.

    The DataLoader delivers batches in the order it requested them, so the oldest record
    describes the next batch to arrive; the loader pops it on delivery.
    """

    def __init__(self, sampler: ResizableBatchSampler) -> None:
        self.sampler = sampler
        self.in_flight: deque[Span] = deque()

    def __iter__(self) -> Iterator[list[int]]:
        self.in_flight.clear()  # a new iteration: whatever was in flight was discarded
        for span in self.sampler.plan():
            self.in_flight.append(span)
            yield self.sampler.index_list(span)

    def __len__(self) -> int:
        return len(self.sampler)


class AdaptiveLoader:
    """Iterate over a data set in batches whose size may change between any two batches.

    Args:
        dataset: a map-style data set.
        batch_size: initial global batch size (see `ResizableBatchSampler`).
        shuffle, seed, drop_last: as for `ResizableBatchSampler`.
        rank, world_size: this process's place; default: from ``torch.distributed`` when it is
            initialised, else 0 and 1. ``batch_size`` is global; each rank gets its slice.
        num_workers, pin_memory, collate_fn, prefetch_factor, persistent_workers,
            worker_init_fn, timeout, multiprocessing_context: passed to the DataLoader
            (``persistent_workers`` defaults to True when there are workers, which makes the
            rewind after a resize cheap).
        fast_path: None (auto: on when the data set can gather and there are no workers and
            no collate function), True (require it) or False (always use a DataLoader).
        device: move each batch there (non-blocking when ``pin_memory``).
        batch_transform: applied to every batch after it reached ``device`` (batched,
            on-device augmentation: see `adabatch.data.transforms`).
        resize_at: "batch" (next batch delivered) or "epoch" (next epoch start).
        min_last_batch: a rest of the epoch shorter than this joins the batch before it (see
            `ResizableBatchSampler`).

    Iterating yields the rest of the current epoch; the next iteration continues with the next
    epoch. `set_epoch` follows the ``DistributedSampler`` convention.

    Example::

        loader = AdaptiveLoader(ArrayDataset(x, y), batch_size=32)
        for epoch in range(10):
            for inputs, targets in loader:
                ...
                loader.set_batch_size(new_size)   # applies to the next batch
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        prefetch_factor: int | None = None,
        persistent_workers: bool | None = None,
        worker_init_fn: Callable[[int], None] | None = None,
        timeout: float = 0,
        multiprocessing_context: Any = None,
        fast_path: bool | None = None,
        device: torch.device | str | None = None,
        batch_transform: Callable[[Any], Any] | None = None,
        resize_at: ResizeAt = "batch",
        min_last_batch: int = 1,
    ) -> None:
        try:
            size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"AdaptiveLoader needs a map-style data set with __len__, got "
                f"{type(dataset).__name__}"
            ) from None
        if rank is None or world_size is None:
            from ..distributed import is_distributed
            from ..distributed import rank as dist_rank
            from ..distributed import world_size as dist_world_size

            dist = is_distributed()
            rank = (dist_rank() if dist else 0) if rank is None else rank
            world_size = (dist_world_size() if dist else 1) if world_size is None else world_size
        self.dataset = dataset
        self.sampler = ResizableBatchSampler(
            size,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            resize_at=resize_at,
            min_last_batch=min_last_batch,
        )
        can_gather = has_fast_path(dataset)
        auto = can_gather and num_workers == 0 and collate_fn is None
        if fast_path is None:
            fast_path = auto
        elif fast_path and not auto:
            why = (
                f"{type(dataset).__name__} has no gather(indices) method and is not a TensorDataset"
                if not can_gather
                else "it runs in the main process: use num_workers=0 and no collate_fn"
            )
            raise ValueError(f"fast_path=True is not possible: {why}")
        self.fast_path = bool(fast_path)
        self.device = torch.device(device) if device is not None else None
        self.pin_memory = pin_memory
        self.batch_transform = batch_transform
        self._recorder = _SpanRecorder(self.sampler)
        self._dataloader: DataLoader | None = None
        if not self.fast_path:
            if persistent_workers is None:
                persistent_workers = num_workers > 0
            self._dataloader = DataLoader(
                dataset,
                batch_sampler=self._recorder,
                num_workers=num_workers,
                collate_fn=_EmptySafeCollate(dataset, collate_fn or default_collate),
                pin_memory=pin_memory,
                timeout=timeout,
                worker_init_fn=worker_init_fn,
                multiprocessing_context=multiprocessing_context,
                prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers,
            )
        self._active: object | None = None  # token of the running iteration

    # ------------------------------------------------------------------ the sampler's state
    @property
    def batch_size(self) -> int:
        """The requested global batch size (the sampler's; pending resizes included)."""
        return self.sampler.batch_size

    def set_batch_size(self, batch_size: int) -> None:
        """Request global batch size ``batch_size`` (applied per ``resize_at``)."""
        self.sampler.set_batch_size(batch_size)

    @property
    def resize_at(self) -> ResizeAt:
        """When a requested size takes effect: "batch" or "epoch" (the sampler's setting)."""
        return self.sampler.resize_at

    @property
    def epoch(self) -> int:
        """The epoch in progress (the sampler's)."""
        return self.sampler.epoch

    @property
    def epoch_done(self) -> bool:
        """Whether the epoch in progress has delivered all its batches (see the sampler)."""
        return self.sampler.epoch_done

    @property
    def resizes(self) -> list[ResizeEvent]:
        """The first batch delivered at each new size (the sampler's record)."""
        return self.sampler.resizes

    @property
    def world_size(self) -> int:
        """Number of processes sharing each global batch."""
        return self.sampler.world_size

    @property
    def last_batch_size(self) -> int:
        """Samples this rank got in the last batch delivered (0 before the first)."""
        last = self.sampler.last
        return 0 if last is None else last.local_length

    @property
    def last_global_batch_size(self) -> int:
        """Samples all ranks together got in the last batch delivered (0 before the first)."""
        last = self.sampler.last
        return 0 if last is None else last.global_length

    @property
    def loss_weight(self) -> float:
        """Factor for this rank's mean loss so that DDP's gradient average is the global mean.

        DDP averages the ranks' gradients; with local batches of unequal size nᵣ that is not
        the mean over the global batch L. Multiplying rank r's mean loss by nᵣ·W/L makes it
        exactly the global mean. 1.0 when the global batch divides evenly.
        """
        if self.last_global_batch_size == 0:
            return 1.0
        return self.last_batch_size * self.world_size / self.last_global_batch_size

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning, unless it is the epoch in progress.

        Called during an iteration with another epoch, it ends that iteration after the batch
        in hand: the next ``for`` loop starts epoch ``epoch``.
        """
        before = self.sampler.epoch
        self.sampler.set_epoch(epoch)  # checks the value first
        if self.sampler.epoch != before:
            self._active = _ENDED

    def __len__(self) -> int:
        """Batches in a whole epoch at the requested batch size (pending resizes included)."""
        return len(self.sampler)

    # ------------------------------------------------------------------ iteration
    def _deliver(self, span: Span, batch: Any) -> Any:
        self.sampler.commit(span)
        if self.device is not None:
            device, non_blocking = self.device, self.pin_memory
            batch = map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))
        if self.batch_transform is not None:
            batch = self.batch_transform(batch)
        return batch

    def _still_active(self, token: object) -> bool:
        """After each batch: go on (True), stop quietly (False), or refuse a stale iterator."""
        if self._active is token:
            return True
        if self._active is _ENDED:
            return False
        raise RuntimeError(
            "another iteration of this AdaptiveLoader started while this one was running; "
            "one loader serves one iteration at a time (both would share one position)"
        )

    def __iter__(self) -> Iterator[Any]:
        token = self._active = object()
        self.sampler.start_next_epoch_if_done()  # the last epoch was used up: the next one
        if self.fast_path:
            yield from self._iter_fast(token)
        else:
            yield from self._iter_dataloader(token)
        if self._active is token:
            self.sampler.start_next_epoch_if_done()

    def _iter_fast(self, token: object) -> Iterator[Any]:
        sampler = self.sampler
        pin = self.pin_memory and torch.cuda.is_available()
        while (span := sampler.next_span()) is not None:
            batch = _gather(self.dataset, sampler.indices(span))
            if pin:
                batch = map_tensors(batch, lambda t: t.pin_memory())
            yield self._deliver(span, batch)
            if not self._still_active(token):
                return

    def _iter_dataloader(self, token: object) -> Iterator[Any]:
        assert self._dataloader is not None
        in_flight = self._recorder.in_flight
        iterator = iter(self._dataloader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                if self.sampler.epoch_done:
                    return
                # The workers ended the epoch under the old size (drop_last dropped a rest
                # that the new size now serves): go on from the delivered position.
                iterator = iter(self._dataloader)
                continue
            span = in_flight.popleft()
            if span.version != self.sampler.version:
                # Planned before a resize: drop it and what was prefetched after it, resume at
                # the first sample not delivered. (With persistent workers the DataLoader's
                # reset drains the outstanding tasks; otherwise new workers start.)
                del iterator
                iterator = iter(self._dataloader)
                continue
            yield self._deliver(span, batch)
            if not self._still_active(token):
                return

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The sampler's state: the position after the last batch delivered, the batch size."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output; a running iteration ends after the batch in hand."""
        self.sampler.load_state_dict(state)
        self._active = _ENDED

    def __repr__(self) -> str:
        path = "tensor fast path" if self.fast_path else "DataLoader"
        return (
            f"AdaptiveLoader({type(self.dataset).__name__} of {self.sampler.dataset_size}, "
            f"batch_size={self.batch_size}, epoch={self.epoch}, position={self.sampler.cursor}, "
            f"{path}, resize_at={self.resize_at!r})"
        )
