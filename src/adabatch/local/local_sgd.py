"""`LocalSGD`: H local steps per worker, then one synchronisation round; an adaptive local batch.

Local SGD over W ``torch.distributed`` processes (gloo on the CPU, NCCL on CUDA; launched by
``torchrun``). Each worker trains its own copy of the model, unwrapped (no DDP: nothing is
communicated per step), on its share of every global batch of the `AdaptiveLoader` (the
global batch is W·b, so each worker draws b samples and the workers' batches partition each
epoch: every sample is seen once per epoch). After H local steps, `sync` averages the
parameters with one all-reduce (and the floating-point buffers, e.g. BatchNorm's running
statistics), or takes one DiLoCo outer step (`OuterNesterov`).

The batch size is the `BatchSizeScheduler`'s, built with ``local_steps=H``: its policy sizes
the *local* batch b (after Lau, Li, Xu, Liu & Kolar, arXiv 2406.13936, whose code is not
public; this is our reading of its rule, stated so it can be checked):

- the statistics are the per-sample gradients of the *first* local step of each round, when
  every worker holds the same parameters x̄. Summed over the workers, they are exactly the
  statistics of one process over the union of their W·b samples (the sums of gᵢ and ‖gᵢ‖²
  add; the pooled variance is the law of total variance over the workers' batches);
- at the round's synchronisation they are all-reduced and the policy (the norm test, the
  inner-product tests, ...) sizes the local batch: the test asks the variance of the gradient
  one worker steps with, V/b, to be small against ‖ḡ‖², the same test as on one process;
- every worker adopts the same size (the same numbers on every rank; checked); it applies
  from the next round; with a monotone policy (the tests) it never shrinks, and it stops at
  the policy's cap (measuring stops there); a schedule (which reads no statistics) keeps
  its own clock; tests that pool a window of steps or epochs (DiveBatch) are refused;
- the scheduler's LR rule (none, linear, sqrt in b/b₀) rescales each worker's LR at a change.

Usage in your own loop (``loader`` is the global `AdaptiveLoader`, ``tracker`` a
`GradStatsTracker` on the model when the policy reads statistics)::

    scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt", local_steps=8)
    local = LocalSGD(model, scheduler)
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            with scheduler.measure(tracker):
                loss_fn(model(x), y).backward()
            optimizer.step()
            scheduler.step()
            if local.sync_due():
                local.sync()          # average (or outer step); maybe a new local batch

A checkpoint taken right after `sync` resumes exactly: every worker holds the same
parameters there. Save `state_dict` with the model, this worker's optimizer and the
scheduler (the optimizer's state differs per worker: momentum, Adam's moments).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..distributed import is_distributed, world_size
from ..distributed.collectives import all_reduce_sum
from ..errors import RankMismatchError
from ..policies.base import Decision
from ..scheduler import BatchSizeScheduler
from .averaging import OuterNesterov, mean_of, outer_gradient

__all__ = ["LocalSGD", "WorkerLostError"]

_STATE_VERSION = 1


class WorkerLostError(RuntimeError):
    """A worker did not take part in a synchronisation round (it died, or hangs)."""


class LocalSGD:
    """Local SGD with parameter averaging or a DiLoCo outer step, and an adaptive local batch.

    Args:
        model: this worker's model (not wrapped in DDP).
        scheduler: the `BatchSizeScheduler` of the run, built with ``local_steps=H`` (its
            policy sizes the local batch; a constant policy keeps it).
        outer: an `OuterNesterov` (DiLoCo) instead of plain averaging.

    The workers start from rank 0's parameters (broadcast here).
    """

    def __init__(
        self,
        model: nn.Module,
        scheduler: BatchSizeScheduler,
        *,
        outer: OuterNesterov | None = None,
    ) -> None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise TypeError(
                "local SGD trains unwrapped models (DDP would all-reduce every step): pass "
                "the module itself, not DistributedDataParallel(module)"
            )
        if not isinstance(scheduler, BatchSizeScheduler) or not scheduler.local_steps:
            raise ValueError(
                "LocalSGD needs the run's BatchSizeScheduler built with local_steps=H (the "
                "local steps between two rounds), e.g. BatchSizeScheduler(policy, loader, "
                "optimizer, local_steps=8)"
            )
        self.model = model
        self.scheduler = scheduler
        self.outer = outer
        self.world = world_size()
        self.rounds = 0  # synchronisation rounds done
        self._broadcast_parameters()
        self._num_parameters = len(list(model.parameters()))
        params = self._tensors()[: self._num_parameters]
        self._anchor = [t.detach().clone() for t in params] if outer else None
        self._momentum: list[Tensor] | None = None

    @property
    def local_steps(self) -> int:
        """H, the local steps between two rounds."""
        return int(self.scheduler.local_steps or 0)

    @property
    def local_batch_size(self) -> int:
        """b, each worker's batch."""
        return self.scheduler.policy_batch_size

    def sync_due(self) -> bool:
        """Whether H local steps were taken since the last round."""
        return self.scheduler.step_count - self.scheduler.round_start >= self.local_steps

    @property
    def in_round(self) -> bool:
        """Whether local steps were taken since the last round (the workers differ)."""
        return self.scheduler.step_count > self.scheduler.round_start

    def sync(self) -> Decision | None:
        """The synchronisation round: average (or outer step), then the batch decision.

        Raises:
            WorkerLostError: a worker did not join the round within the process group's
                timeout.
        """
        tensors = self._tensors()
        steps = self.scheduler.step_count
        try:
            if is_distributed():
                summed = all_reduce_sum([t.detach() for t in tensors])
            else:
                summed = [t.detach().clone() for t in tensors]
            mean = mean_of(summed, self.world)
            if self.outer is not None:
                # The outer step moves the parameters only; buffers (BatchNorm's running
                # statistics) are averaged: extrapolating a variance could make it negative.
                assert self._anchor is not None
                count = self._num_parameters
                delta = outer_gradient(self._anchor, mean[:count])
                stepped, self._momentum = self.outer.step(self._anchor, delta, self._momentum)
                self._anchor = [t.clone() for t in stepped]
                mean = [*stepped, *mean[count:]]
            with torch.no_grad():
                for t, value in zip(tensors, mean, strict=True):
                    t.copy_(value)
            self.rounds += 1
            # all-reduces the round's statistics; the next round starts here
            return self.scheduler.end_round()
        except (RuntimeError, dist.DistBackendError) as exc:
            if isinstance(exc, (RankMismatchError, torch.OutOfMemoryError)) or not is_distributed():
                raise  # the workers disagree, memory, or no process group: not a lost worker
            raise WorkerLostError(
                f"synchronisation round {self.rounds + 1} (after local step {steps}) failed: "
                f"a worker did not take part ({type(exc).__name__}: {exc}). Local SGD needs "
                "every worker at every round: restart from the last checkpoint"
            ) from exc

    # ------------------------------------------------------------------ helpers
    def _tensors(self) -> list[Tensor]:
        """What a round averages: the parameters and the floating-point buffers."""
        buffers = [b for b in self.model.buffers() if b.is_floating_point()]
        return [p.data for p in self.model.parameters()] + [b.data for b in buffers]

    def _broadcast_parameters(self) -> None:
        if not is_distributed():
            return
        with torch.no_grad():
            for t in self._tensors():
                dist.broadcast(t, src=0)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Rounds, and the outer optimizer's anchor and momentum (the scheduler is separate)."""
        return {
            "version": _STATE_VERSION,
            "world": self.world,
            "rounds": self.rounds,
            "anchor": None if self._anchor is None else [t.clone() for t in self._anchor],
            "momentum": None if self._momentum is None else [t.clone() for t in self._momentum],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output into a LocalSGD built like the one that saved it."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"local SGD state version {state.get('version')!r} is not {_STATE_VERSION}"
            )
        if state["world"] != self.world:
            raise ValueError(
                f"the checkpoint was written by {state['world']} workers, this run has "
                f"{self.world}: resume with the same number of workers"
            )
        if (state["anchor"] is None) != (self.outer is None):
            raise ValueError("the checkpoint and this run differ in having an outer optimizer")
        self.rounds = int(state["rounds"])
        self._anchor = None if state["anchor"] is None else [t.clone() for t in state["anchor"]]
        self._momentum = (
            None if state["momentum"] is None else [t.clone() for t in state["momentum"]]
        )
