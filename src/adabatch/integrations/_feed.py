"""The training data a host trainer iterates: our resizable batches, split into micro-batches.

A host trainer (Lightning, Hugging Face) iterates its training data itself and reads one
batch *ahead* of the step it runs: Lightning's fetcher prefetches a batch to know whether the
epoch ends, accelerate's data loader does the same. A batch drawn ahead would still have the
old size when the policy decides after a step — every resize would land one batch late.

NOTE [deferred batches]. So the feed hands the host a `DeferredBatch`: a placeholder that
draws its micro-batch when the host first moves it to a device (``batch.to(device)``, which
both hosts call on every batch before the step that uses it) or first reads it. By then the
previous step and its decision are done, and a resize applies from the very next batch. The
host still learns one batch ahead whether another one *exists*: that does not depend on the
size (a remaining sample always starts a batch), only on the position, and the number of
micro-batches of a batch is fixed by its size and the physical limit (`ChunkFeed`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..data import AdaptiveLoader
from ..data._batch import map_tensors
from ..data.micro import split_evenly

__all__ = [
    "ChunkFeed",
    "CountOf",
    "DeferredBatch",
    "MicroBatch",
    "accumulation_count",
    "physical_count",
]

_UNSET = object()


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch of a logical batch, as the host's training step gets it.

    Attributes:
        index: k, its place among the logical batch's micro-batches (0-based).
        count: K, how many micro-batches the logical batch has on this rank.
        size: nₖ, its samples.
        local: N_r, this rank's samples of the logical batch.
        global_size: L, all ranks' samples of the logical batch.
        world_size: W.
        requested: the batch size in force when the logical batch was drawn (L, except for
            an epoch's short last batch).
    """

    index: int
    count: int
    size: int
    local: int
    global_size: int
    world_size: int
    requested: int = 0

    @property
    def is_last(self) -> bool:
        """Whether the optimizer steps after this micro-batch."""
        return self.index == self.count - 1

    @property
    def weight(self) -> float:
        """wₖ = (nₖ/N_r)·(N_r·W/L) = nₖ·W/L: the factor on its mean loss for the exact mean.

        Summed over the micro-batches and averaged over the ranks (DDP), Σ wₖ·(1/nₖ)Σᵢ∇ℓᵢ / W
        is the mean gradient over the L samples of the logical batch.
        """
        return self.size * self.world_size / self.global_size if self.global_size else 0.0


class DeferredBatch:
    """A micro-batch drawn when first used: moved to a device, indexed, iterated, measured.

    ``to(...)`` returns the drawn batch with every tensor moved (the host keeps the result);
    the other accesses read the drawn batch, so a host hook that looks at the batch before
    moving it still sees real data.
    """

    __slots__ = ("_batch", "_feed")

    def __init__(self, feed: ChunkFeed) -> None:
        self._feed = feed
        self._batch: Any = _UNSET

    def materialize(self) -> Any:
        """The micro-batch (drawn from the feed on the first call)."""
        if self._batch is _UNSET:
            self._batch = self._feed._draw()
        return self._batch

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """The micro-batch with its tensors moved (``Tensor.to`` arguments)."""
        return map_tensors(self.materialize(), lambda t: t.to(*args, **kwargs))

    def __getitem__(self, key: Any) -> Any:
        return self.materialize()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.materialize())

    def __len__(self) -> int:
        return len(self.materialize())

    def __contains__(self, key: Any) -> bool:
        return key in self.materialize()

    def keys(self) -> Any:
        """The drawn batch's keys (a dict batch)."""
        return self.materialize().keys()

    def items(self) -> Any:
        """The drawn batch's items (a dict batch)."""
        return self.materialize().items()

    def values(self) -> Any:
        """The drawn batch's values (a dict batch)."""
        return self.materialize().values()

    def __repr__(self) -> str:
        state = "pending" if self._batch is _UNSET else "drawn"
        return f"DeferredBatch({state})"


CountOf = Callable[[int, int, int], int]
"""K(L, W, i): micro-batches per process of the i-th logical batch (of L samples over W
processes) since the host last started iterating. The same on every process: a process
stepping after fewer micro-batches than another would leave it waiting in a collective."""


class ChunkFeed:
    """Iterate an `AdaptiveLoader` as micro-batches for a host trainer.

    Args:
        loader: the resizable loader (its sampler owns the batch size and the position).
        count_of: `CountOf`, the micro-batches of each logical batch (Lightning:
            ⌈⌈L/W⌉ / physical limit⌉; Hugging Face: its gradient accumulation steps, fewer
            for the last update it plans in an epoch).
        deferred: hand out `DeferredBatch` placeholders (NOTE [deferred batches]); False
            draws each micro-batch when the host asks for it.
        continuous: one iteration never ends: at each epoch's end ``on_epoch_end`` is called
            and the next epoch follows (for a host that bounds its epochs by a step count).
        on_epoch_end: called between two epochs of a continuous iteration, before the next
            epoch's first batch is drawn (so an epoch-end resize applies to it).
        on_draw: applied to each micro-batch when a placeholder draws it (the conversion the
            host would have applied to a real batch, e.g. Lightning's precision plugin).

    Iterating yields the rest of the current epoch; the next iteration starts the next one.
    It has no length: the number of batches depends on decisions not yet taken.

    `drawn` holds the micro-batches drawn and not yet run, in order: a host draws each batch
    right before the step that uses it (Hugging Face with gradient accumulation draws all of a
    logical batch's micro-batches before its first step).
    """

    # Hosts probe their data for these (accelerate's set_epoch, Lightning's sampler epochs);
    # the feed has neither: the sampler inside moves to the next epoch by itself.
    batch_sampler = None

    def __init__(
        self,
        loader: AdaptiveLoader,
        count_of: CountOf,
        *,
        deferred: bool = True,
        continuous: bool = False,
        on_epoch_end: Callable[[], Any] | None = None,
        on_draw: Callable[[Any], Any] | None = None,
    ) -> None:
        self.loader = loader
        self._sampler = loader.sampler  # private: hosts look for .sampler to call set_epoch
        self.count_of = count_of
        self.deferred = deferred
        self.continuous = continuous
        self.on_epoch_end = on_epoch_end
        self.on_draw = on_draw
        self.drawn: deque[MicroBatch] = deque()  # drawn, their step not yet begun
        self._chunks: deque[tuple[Any, MicroBatch]] = deque()  # of the logical batch in hand
        self._promised = 0  # placeholders handed out, not yet drawn
        self._index = 0  # logical batches drawn since the host started iterating
        self._loader_iter: Iterator[Any] | None = None
        self._rewind: dict[str, Any] | None = None  # the sampler before the batch in hand

    @property
    def dataset(self) -> Any:
        """The data set the batches come from."""
        return self.loader.dataset

    def _count(self, global_length: int, index: int) -> int:
        return self.count_of(global_length, self._sampler.world_size, index)

    def _chunks_ahead_exceed(self, promised: int) -> bool:
        """Whether more than ``promised`` micro-batches remain in the iteration."""
        if self.continuous:
            return True
        ahead = len(self._chunks)
        if ahead > promised:
            return True
        for j, span in enumerate(self._sampler.plan()):
            ahead += self._count(span.global_length, self._index + j)
            if ahead > promised:
                return True
        return False

    def __iter__(self) -> Iterator[Any]:
        # A new epoch (or the rest of a resumed one): a fresh pass of the loader, which starts
        # the next epoch when the last one was used up.
        self._next_epoch_if_done()
        self._loader_iter = iter(self.loader)
        self._promised = 0
        self._index = 0
        while self._chunks_ahead_exceed(self._promised):
            if self.deferred:
                self._promised += 1
                yield DeferredBatch(self)
            else:
                yield self._draw()

    def _next_epoch_if_done(self) -> None:
        """Start the next epoch when the one in progress is used up (its end taken first)."""
        if self._sampler.epoch_done:
            if self.continuous and self.on_epoch_end is not None:
                self.on_epoch_end()  # may resize: the next epoch's first batch has the new size
            self._sampler.start_next_epoch_if_done()

    def _draw(self) -> Any:
        if self.deferred:
            self._promised -= 1
        if not self._chunks:
            self._next_logical_batch()
        batch, info = self._chunks.popleft()
        self.drawn.append(info)
        if self.deferred and self.on_draw is not None:
            batch = self.on_draw(batch)
        return batch

    def _next_logical_batch(self) -> None:
        assert self._loader_iter is not None
        if self.continuous and self._sampler.epoch_done:
            self._next_epoch_if_done()
            self._loader_iter = iter(self.loader)
        self._rewind = self._sampler.state_dict()
        batch = next(self._loader_iter)
        last = self._sampler.last
        assert last is not None
        n = last.local_length
        count = self._count(last.global_length, self._index)
        self._index += 1
        for k, chunk in enumerate(split_evenly(batch, count)):
            info = MicroBatch(
                k,
                count,
                chunk.size,
                n,
                last.global_length,
                self._sampler.world_size,
                last.size,
            )
            self._chunks.append((chunk.batch, info))

    @property
    def mid_batch(self) -> bool:
        """Whether a logical batch is partly consumed (its remaining micro-batches queued)."""
        return bool(self._chunks)

    # Not ``state_dict``: a host that finds a ``state_dict`` on its data (Lightning does) would
    # checkpoint and restore it a second time, beside the callback's own state.
    def snapshot(self) -> dict[str, Any]:
        """The sampler's state; mid-batch, the state before that batch (it is redone)."""
        if self._chunks and self._rewind is not None:
            return dict(self._rewind)
        return self._sampler.state_dict()

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` output: the next iteration continues from there."""
        self.loader.load_state_dict(state)
        self._chunks.clear()
        self.drawn.clear()


def physical_count(limit: int | None) -> CountOf:
    """K = ⌈⌈L/W⌉ / limit⌉: from the largest share, so that every process agrees.

    A process whose share is one sample short may then get an empty micro-batch (when the
    limit is 1): its gradient contribution is zero, as its weight nₖ·W/L.
    """
    if limit is None:
        return lambda length, world, index: 1
    return lambda length, world, index: max(1, math.ceil(math.ceil(length / world) / limit))


def accumulation_count(steps: int, planned_batches: int) -> CountOf:
    """Hugging Face's: G micro-batches per update, the remainder for its last planned update.

    The Trainer plans an epoch as ``planned_batches`` micro-batches (its data loader's
    length at B₀) in ⌈planned/G⌉ updates, and fetches only ``planned mod G`` (or G) for the
    last: the i-th logical batch of an iteration gets what the Trainer will fetch for it.
    """
    updates = max(planned_batches // steps + int(planned_batches % steps > 0), 1)
    remainder = planned_batches % steps or steps
    return lambda length, world, index: remainder if index == updates - 1 else steps
