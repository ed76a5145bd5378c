"""Micro-batching: a logical batch larger than memory allows, as several physical chunks.

With a mean-reduced loss, chunk k of nₖ samples (Σnₖ = N) contributes its mean loss times
wₖ = nₖ/N, so the accumulated gradient is

    Σₖ wₖ · (1/nₖ) Σ_{i∈k} ∇ℓᵢ = (1/N) Σᵢ ∇ℓᵢ,

the one-big-batch gradient, also when the chunks differ in size (a short last chunk). A
plain "divide by the number of chunks" would weigh the samples of a short chunk more. With a
sum-reduced loss every weight is 1.

`accumulate_gradients` runs the chunks (under DDP, all but the last in ``no_sync()`` so that
gradients are all-reduced once); `MicroBatcher` adds the memory side: when a batch larger than
any that ran before fails with an out-of-memory error, it restores the gradients, probes once
for the largest physical batch that fits (`probe_max_batch_size`) and from then on splits
every larger batch into chunks of that size — growing the batch never crashes the run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._types import LossReduction
from .._validate import as_int, as_optional_int, check_reduction
from ._batch import slice_rows, tensors_in
from .memory import free_memory, is_out_of_memory, probe_max_batch_size

if TYPE_CHECKING:
    from ..stats import GradStatsTracker

__all__ = [
    "Chunk",
    "MicroBatcher",
    "accumulate_gradients",
    "batch_length",
    "split_batch",
    "split_evenly",
]


def batch_length(batch: Any) -> int:
    """The number of samples in ``batch``: the common first dimension of all its tensors.

    ``batch`` is a tensor or a (nested) tuple, list or dict of tensors; other leaves are
    ignored.
    """
    lengths = {int(t.shape[0]) for t in tensors_in(batch) if t.dim() > 0}
    if len(lengths) != 1:
        raise ValueError(
            "a batch must hold tensors that share their first (sample) dimension, got "
            + (f"first dimensions {sorted(lengths)}" if lengths else "no tensor")
        )
    return lengths.pop()


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of a logical batch of ``total`` samples.

    Attributes:
        batch: the rows, with the logical batch's structure.
        start, stop: the rows' range in the logical batch.
        total: N, the logical batch size.
    """

    batch: Any
    start: int
    stop: int
    total: int

    @property
    def size(self) -> int:
        """nₖ, the number of samples in the chunk."""
        return self.stop - self.start

    @property
    def weight(self) -> float:
        """wₖ = nₖ/N, the factor for the chunk's *mean* loss (0 for an empty batch)."""
        return self.size / self.total if self.total else 0.0


def split_batch(batch: Any, max_size: int | None) -> list[Chunk]:
    """Split ``batch`` into ⌈N/max_size⌉ chunks of near-equal size (sizes differ by ≤ 1).

    Near-equal rather than ``max_size, max_size, …, rest``: the same number of chunks, and no
    tiny last chunk that runs at low throughput. ``max_size=None`` gives one chunk. An empty
    batch gives one empty chunk (so that a rank with no samples still runs its backward).
    Tensors are split along their first dimension, and so are lists of N plain values (the
    default collate turns per-sample strings into such a list).
    """
    max_size = as_optional_int(max_size, "max_size", minimum=1)
    n = batch_length(batch)
    if max_size is None or n <= max_size:
        return [Chunk(batch, 0, n, n)]
    return split_evenly(batch, math.ceil(n / max_size))


def split_evenly(batch: Any, count: int) -> list[Chunk]:
    """``batch`` as ``count`` consecutive chunks whose sizes differ by at most one.

    A batch of fewer than ``count`` samples gives some empty chunks (the first ones hold
    the samples).
    """
    count = as_int(count, "count", minimum=1)
    n = batch_length(batch)
    if count == 1:
        return [Chunk(batch, 0, n, n)]
    base, extra = divmod(n, count)
    chunks, start = [], 0
    for k in range(count):
        stop = start + base + (1 if k < extra else 0)
        chunks.append(Chunk(slice_rows(batch, start, stop, n), start, stop, n))
        start = stop
    return chunks


def _check_reduction(loss_reduction: str, tracker: GradStatsTracker | None) -> None:
    check_reduction(loss_reduction)
    if tracker is not None and tracker.loss_reduction != loss_reduction:
        raise ValueError(
            f"the tracker was built with loss_reduction={tracker.loss_reduction!r} but the loss "
            f"is declared {loss_reduction!r}; its statistics would be scaled wrongly — declare "
            "the same reduction in both"
        )


def _no_sync(model: nn.Module | None) -> contextlib.AbstractContextManager[Any]:
    no_sync = getattr(model, "no_sync", None)  # DistributedDataParallel (and FSDP)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()


def accumulate_gradients(
    loss_of: Callable[[Any], Tensor],
    batch: Any,
    *,
    max_physical_batch_size: int | None = None,
    loss_reduction: LossReduction = "mean",
    tracker: GradStatsTracker | None = None,
    model: nn.Module | None = None,
) -> Tensor:
    """Backward over ``batch`` in chunks; ``p.grad`` receives the logical batch's gradient.

    Args:
        loss_of: maps a (chunk of a) batch to its loss, reduced as ``loss_reduction`` says.
        batch: the logical batch (a tensor or a tuple/list/dict of tensors).
        max_physical_batch_size: largest chunk (None: the whole batch at once).
        loss_reduction: "mean" (each chunk's loss is weighted by nₖ/N) or "sum" (weight 1).
        tracker: a `GradStatsTracker` on the model: told each chunk's weight, so that its
            statistics are those of the logical batch.
        model: the module being trained; when it has ``no_sync`` (DDP), every chunk but the
            last runs inside it, so gradients are all-reduced once per logical batch.

    Returns:
        The logical batch's loss (mean or sum as declared), detached.

    Gradients *accumulate* into ``p.grad`` like ``loss.backward()``: zero them first. For an
    empty batch the loss is taken as 0 and every gradient contribution is 0 (the backward
    still runs, so DDP's collectives stay in step across ranks).
    """
    _check_reduction(loss_reduction, tracker)
    chunks = split_batch(batch, max_physical_batch_size)
    total = None
    for k, chunk in enumerate(chunks):
        weight = chunk.weight if loss_reduction == "mean" else 1.0
        sync = contextlib.nullcontext() if k == len(chunks) - 1 else _no_sync(model)
        with sync:
            if chunk.size == 0:
                # The mean over no sample is NaN; zero it without cutting the graph, so that
                # the backward runs and deposits zero gradients.
                loss = torch.nan_to_num(loss_of(chunk.batch), nan=0.0) * 0.0
            elif tracker is not None and weight != 1.0:
                with tracker.loss_weight(weight):
                    loss = loss_of(chunk.batch) * weight
            else:
                loss = loss_of(chunk.batch) * weight if weight != 1.0 else loss_of(chunk.batch)
            _check_loss(loss)
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    return total


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_of must return a scalar loss tensor (reduced over the chunk), got {shape}"
        )


class MicroBatcher:
    """Run logical batches of any size: micro-batch above the physical batch that fits.

    Args:
        model: the module being trained (its parameters' gradients are restored after a
            failed attempt; ``no_sync`` is used when it has one).
        max_physical_batch_size: known largest physical batch (None: unknown / unlimited).
        probe_on_oom: when a batch larger than any that ran before runs out of memory,
            probe for the largest physical batch once and micro-batch from then on. Default:
            on in a single process, off under ``torch.distributed`` (one rank failing while
            the others wait in a collective cannot be recovered; there, call
            `probe_max_batch_size` before training, which agrees on the minimum over ranks).
        loss_reduction: how ``loss_of`` reduces over a chunk.
        tracker: the model's `GradStatsTracker`, if any (its statistics of a failed attempt
            are discarded).

    Example::

        micro = MicroBatcher(model, max_physical_batch_size=256, tracker=tracker)
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = micro.backward(lambda b: loss_fn(model(b[0]), b[1]), (inputs, targets))
            optimizer.step()
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_physical_batch_size: int | None = None,
        probe_on_oom: bool | None = None,
        loss_reduction: LossReduction = "mean",
        tracker: GradStatsTracker | None = None,
    ) -> None:
        from ..distributed import is_distributed

        max_physical_batch_size = as_optional_int(
            max_physical_batch_size, "max_physical_batch_size", minimum=1
        )
        _check_reduction(loss_reduction, tracker)
        if probe_on_oom is None:
            probe_on_oom = not is_distributed()
        elif probe_on_oom and is_distributed():
            raise ValueError(
                "probe_on_oom=True is not supported under torch.distributed: a rank that runs "
                "out of memory cannot be recovered while the others wait in a collective. "
                "Call adabatch.data.probe_max_batch_size before training and pass "
                "max_physical_batch_size instead"
            )
        self.model = model
        self.max_physical_batch_size = max_physical_batch_size
        self.probe_on_oom = probe_on_oom
        self.loss_reduction: LossReduction = loss_reduction
        self.tracker = tracker
        self.largest_run = 0  # largest physical batch that has run without error
        self.probes = 0  # how many times the probe ran

    def backward(self, loss_of: Callable[[Any], Tensor], batch: Any) -> Tensor:
        """`accumulate_gradients` over ``batch``; returns the logical batch's loss (detached)."""
        n = batch_length(batch)
        physical = min(n, self.max_physical_batch_size or n)
        if not self.probe_on_oom or physical <= self.largest_run:
            return self._run(loss_of, batch)
        # A physical size never run before: keep what an out-of-memory error would destroy.
        saved = self._save_grads()
        passes = self.tracker.num_passes if self.tracker is not None else 0
        try:
            loss = self._run(loss_of, batch)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            failed = True
        else:
            failed = False
        if not failed:
            self.largest_run = physical
            return loss
        # Undo the attempt (its gradients and statistics), find what fits, retry.
        self._restore(saved, passes)
        free_memory()
        try:
            self._zero_grads()  # the trials must not add into the saved gradients
            self.max_physical_batch_size = self._probe(loss_of, batch, limit=physical - 1)
        finally:
            self._restore(saved, passes)
        loss = self._run(loss_of, batch)
        self.largest_run = self.max_physical_batch_size
        return loss

    def _run(self, loss_of: Callable[[Any], Tensor], batch: Any) -> Tensor:
        return accumulate_gradients(
            loss_of,
            batch,
            max_physical_batch_size=self.max_physical_batch_size,
            loss_reduction=self.loss_reduction,
            tracker=self.tracker,
            model=self.model,
        )

    def _probe(self, loss_of: Callable[[Any], Tensor], batch: Any, limit: int) -> int:
        if limit < 1:
            raise RuntimeError(
                "out of memory at a physical batch size of 1: the model does not fit on this device"
            )
        self.probes += 1
        tracker = self.tracker

        def trial(size: int) -> None:
            try:
                with tracker.paused() if tracker is not None else contextlib.nullcontext():
                    loss_of(slice_rows(batch, 0, size, batch_length(batch))).backward()
            finally:
                self._zero_grads()

        known = min(self.largest_run, limit)
        start = min(2 * known, limit) if known else max(1, limit // 2)
        return probe_max_batch_size(
            trial, start=start, limit=limit, known_fit=known, reduce_across_ranks=False
        )

    def _params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _save_grads(self) -> list[Tensor | None]:
        return [None if p.grad is None else p.grad.clone() for p in self._params()]

    def _restore(self, saved: list[Tensor | None], passes: int) -> None:
        """Put back the saved gradients and the tracker's passes from before the attempt.

        Fresh copies of the gradients: later steps add into ``p.grad`` in place.
        """
        for p, g in zip(self._params(), saved, strict=True):
            p.grad = None if g is None else g.clone()
        if self.tracker is not None:
            self.tracker.reset(keep=passes)

    def _zero_grads(self) -> None:
        for p in self._params():
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The physical limit found so far (a resumed run need not probe again)."""
        return {
            "max_physical_batch_size": self.max_physical_batch_size,
            "largest_run": self.largest_run,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        missing = {"max_physical_batch_size", "largest_run"} - set(state)
        if missing:
            raise KeyError(f"MicroBatcher state is missing {sorted(missing)}")
        limit = as_optional_int(state["max_physical_batch_size"], "max_physical_batch_size", 1)
        largest = as_int(state["largest_run"], "largest_run", minimum=0)
        self.max_physical_batch_size, self.largest_run = limit, largest
