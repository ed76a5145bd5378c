"""`LocalSGD`: H local steps per worker, then one synchronisation round; an adaptive local batch.

Local SGD over W ``torch.distributed`` processes (gloo on the CPU, NCCL on CUDA; launched by
``torchrun``). Each worker trains its own copy of the model, unwrapped (no DDP: nothing is
communicated per step), on its share of every global batch of the `AdaptiveLoader` (the
global batch is W·b, so each worker draws b samples and the workers' batches partition each
epoch: every sample is seen once per epoch). After H local steps, `sync` averages the
parameters with one all-reduce (and the floating-point buffers, e.g. BatchNorm's running
statistics), or takes one DiLoCo outer step (`OuterNesterov`).

The adaptive local batch (after Lau, Li, Xu, Liu & Kolar, arXiv 2406.13936). The paper's code
is not public; this is our reading of its rule, stated so it can be checked:

- the statistics are the per-sample gradients of the *first* local step of each round, when
  every worker holds the same parameters x̄. Summed over the workers, they are exactly the
  statistics of one process over the union of their W·b samples (sums of gᵢ and ‖gᵢ‖² add;
  the pooled variance is the law of total variance over the workers' batches);
- at the round's synchronisation they are all-reduced and the policy (the norm test,
  inner-product tests, ...) sizes the *local* batch b: the test asks the variance of the
  gradient one worker steps with, V/b, to be small against ‖ḡ‖², the same test as AdAdaGrad's
  on one process;
- every worker adopts the same size (the same numbers on every rank; checked); it applies from
  the next round's first step; it never shrinks and stops at the policy's cap (the policies
  are monotone and capped; measuring stops at the cap);
- the LR rule (none, linear, sqrt in b/b₀) rescales the workers' optimizer at each change.

Usage in your own loop (``loader`` is the global `AdaptiveLoader`, ``tracker`` a
`GradStatsTracker` on the model when the policy reads statistics)::

    local = LocalSGD(model, optimizer, loader, local_steps=8, policy=policy, lr_rule="sqrt")
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            with local.measure(tracker):
                loss_fn(model(x), y).backward()
            optimizer.step()
            local.after_step()
            if local.sync_due():
                local.sync()          # average (or outer step); maybe a new local batch

A checkpoint taken right after `sync` resumes exactly: every worker holds the same
parameters there. Save `state_dict` with the model, this worker's optimizer and the loader
(their states differ per worker: momentum, Adam's moments).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._validate import as_int
from ..data import AdaptiveLoader
from ..distributed import all_reduce_stats, check_agreement, is_distributed, world_size
from ..distributed.collectives import _all_reduce_by_dtype
from ..lr_coupling import LRCoupling
from ..policies.base import BatchSizePolicy, Decision, state_from_plain, state_to_plain
from ..stats import GradStatsTracker
from ..stats.window import StatsWindow
from .averaging import OuterNesterov, mean_of, outer_gradient

__all__ = ["LocalSGD", "WorkerLostError"]

_STATE_VERSION = 1


class WorkerLostError(RuntimeError):
    """A worker did not take part in a synchronisation round (it died, or hangs)."""


class LocalSGD:
    """Local SGD with parameter averaging or a DiLoCo outer step, and an adaptive local batch.

    Args:
        model: this worker's model (not wrapped in DDP).
        optimizer: this worker's optimizer over ``model``'s parameters (any torch optimizer).
        loader: the `AdaptiveLoader` of the *global* batch W·b (each worker reads its share).
        local_steps: H, the local steps between two synchronisation rounds.
        policy: a batch-size policy sizing the local batch b from the pooled statistics of
            each round's first step (e.g. ``make_policy("norm-test", batch_size=b0, eta=0.5,
            max_batch_size=...)``), or None: a constant local batch. Its ``batch_size`` must be
            the loader's per-worker share.
        lr_rule: "none", "linear" or "sqrt": the workers' LR × (b/b₀)^{0, 1, 1/2}.
        outer: an `OuterNesterov` (DiLoCo) instead of plain averaging.

    The workers start from rank 0's parameters (broadcast here).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: AdaptiveLoader,
        *,
        local_steps: int,
        policy: BatchSizePolicy | None = None,
        lr_rule: str = "none",
        outer: OuterNesterov | None = None,
    ) -> None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise TypeError(
                "local SGD trains unwrapped models (DDP would all-reduce every step): pass "
                "the module itself, not DistributedDataParallel(module)"
            )
        if not isinstance(loader, AdaptiveLoader):
            raise TypeError(f"loader must be an adabatch AdaptiveLoader, got {type(loader)}")
        self.local_steps = as_int(local_steps, "local_steps", minimum=1)
        self.model = model
        self.optimizer = optimizer
        self.loader = loader
        self.world = world_size()
        if loader.batch_size % self.world:
            raise ValueError(
                f"the loader's global batch {loader.batch_size} is not a multiple of the "
                f"{self.world} workers: give it W·b, b the local batch (e.g. "
                f"{self.world * max(1, loader.batch_size // self.world)})"
            )
        local = loader.batch_size // self.world
        if policy is not None and policy.batch_size != local:
            raise ValueError(
                f"the policy starts from batch {policy.batch_size}, the loader's local share "
                f"is {local} ({loader.batch_size} over {self.world} workers): the policy sizes "
                "the local batch; make them equal"
            )
        self.policy = policy
        self.outer = outer
        self.lr_coupling = (
            LRCoupling(optimizer, rule=lr_rule, base_batch_size=local)
            if lr_rule != "none"
            else None
        )
        if lr_rule not in ("none", "linear", "sqrt"):  # LRCoupling checks the others
            raise ValueError(f"lr_rule must be 'none', 'linear' or 'sqrt', got {lr_rule!r}")
        self._state = policy.init() if policy is not None else None
        self._pending = StatsWindow()
        self.local_step = 0  # local steps since the last synchronisation
        self.steps = 0  # local steps in all (every worker takes the same number)
        self.rounds = 0  # synchronisation rounds done
        self.samples = 0  # training samples consumed by all workers together
        self.decisions: list[Decision] = []
        #: the pooled statistics the last decision read (None before one), for logging
        self.last_statistics: Any = None
        self._broadcast_parameters()
        self._anchor = [t.detach().clone() for t in self._tensors()] if outer else None
        self._momentum: list[Tensor] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def local_batch_size(self) -> int:
        """b, each worker's batch (the loader's global batch over the workers)."""
        return self.loader.batch_size // self.world

    @property
    def wants_stats(self) -> bool:
        """Whether the coming local step is measured (a round's first step, below the cap)."""
        policy = self.policy
        if policy is None or not policy.stats_request.per_sample or self.local_step != 0:
            return False
        return policy.cadence.measure_at_cap or self.local_batch_size < policy.cap

    def sync_due(self) -> bool:
        """Whether H local steps were taken since the last round."""
        return self.local_step >= self.local_steps

    # ------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def measure(self, tracker: GradStatsTracker | None) -> Iterator[None]:
        """Run the step's forward/backward inside; its statistics are kept when wanted."""
        if tracker is None:
            if self.policy is not None and self.policy.stats_request.per_sample:
                raise ValueError(
                    f"the {self.policy.name} policy reads per-sample statistics: pass a "
                    "GradStatsTracker(model) to measure()"
                )
            yield
            return
        tracker.reset()
        if not self.wants_stats:
            with tracker.paused():
                yield
            return
        yield
        self._pending.add(tracker.pop())

    def after_step(self) -> None:
        """Count one local step (call after ``optimizer.step()``)."""
        self.local_step += 1
        self.steps += 1
        self.samples += self.loader.last_global_batch_size

    def sync(self) -> Decision | None:
        """The synchronisation round: average (or outer step), then the batch decision.

        Raises:
            WorkerLostError: a worker did not join the round within the process group's
                timeout.
        """
        tensors = self._tensors()
        try:
            summed = (
                _all_reduce_by_dtype([t.detach() for t in tensors], None)
                if (is_distributed())
                else [t.detach().clone() for t in tensors]
            )
            pending = self._pending.pop()
            pooled = all_reduce_stats(pending) if pending is not None else None
        except (RuntimeError, dist.DistBackendError) as exc:
            raise WorkerLostError(
                f"synchronisation round {self.rounds + 1} (after local step {self.steps}) "
                f"failed: a worker did not take part ({type(exc).__name__}: {exc}). Local SGD "
                "needs every worker at every round: restart from the last checkpoint"
            ) from exc
        mean = mean_of(summed, self.world)
        if self.outer is not None:
            assert self._anchor is not None
            delta = outer_gradient(self._anchor, mean)
            new, self._momentum = self.outer.step(self._anchor, delta, self._momentum)
            self._anchor = [t.clone() for t in new]
            mean = new
        with torch.no_grad():
            for t, value in zip(tensors, mean, strict=True):
                t.copy_(value)
        self.local_step = 0
        self.rounds += 1
        return self._decide(pooled)

    def _decide(self, pooled: Any) -> Decision | None:
        if self.policy is None or pooled is None:
            return None
        self.last_statistics = pooled
        b = self.local_batch_size
        self._state, decision = self.policy.decide(
            self._state,
            pooled,
            batch_size=b,
            step=self.steps - 1,
            epoch=self.loader.epoch,
            samples=self.samples,
        )
        if is_distributed():
            check_agreement(
                [b, None if decision is None else decision.new_batch_size],
                f"the local batch decided at round {self.rounds}",
                ("local batch in force", "new local batch"),
            )
        if decision is None:
            return None
        if decision.changed:
            self.loader.sampler.set_batch_size(decision.new_batch_size * self.world)
        if self.lr_coupling is not None:
            self.lr_coupling.update(decision.new_batch_size, decision.lr_factor)
        if decision.changed or decision.lr_factor != 1.0:
            self.decisions.append(decision)
        return decision

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
        """Counters, the policy and its state, the LR coupling, the outer optimizer's state.

        The model, this worker's optimizer and the loader are saved by the caller.
        """
        return {
            "version": _STATE_VERSION,
            "world": self.world,
            "local_steps": self.local_steps,
            "local_step": self.local_step,
            "steps": self.steps,
            "rounds": self.rounds,
            "samples": self.samples,
            "policy": None if self.policy is None else self.policy.state_dict(),
            "policy_state": None if self.policy is None else state_to_plain(self._state),
            "pending": self._pending.state_dict(),
            "lr": None if self.lr_coupling is None else self.lr_coupling.state_dict(),
            "anchor": None if self._anchor is None else [t.clone() for t in self._anchor],
            "momentum": None if self._momentum is None else [t.clone() for t in self._momentum],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output into a LocalSGD built like the one that saved it."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"local SGD state version {state.get('version')!r} is not {_STATE_VERSION}"
            )
        for key, mine in (("world", self.world), ("local_steps", self.local_steps)):
            if state[key] != mine:
                raise ValueError(
                    f"the checkpoint was written with {key}={state[key]}, this run has "
                    f"{key}={mine}: resume with the same number of workers and local steps"
                )
        if (state["policy"] is None) != (self.policy is None):
            raise ValueError("the checkpoint and this run differ in having a batch-size policy")
        if self.policy is not None:
            self.policy.check_state_dict(state["policy"])
            self._state = state_from_plain(self.policy.init(), state["policy_state"])
        self.local_step = int(state["local_step"])
        self.steps = int(state["steps"])
        self.rounds = int(state["rounds"])
        self.samples = int(state["samples"])
        self._pending.load_state_dict(state["pending"])
        if self.lr_coupling is not None:
            if state["lr"] is None:
                raise ValueError("the checkpoint has no LR coupling, this run has one")
            self.lr_coupling.load_state_dict(state["lr"])
        self._anchor = None if state["anchor"] is None else [t.clone() for t in state["anchor"]]
        self._momentum = (
            None if state["momentum"] is None else [t.clone() for t in state["momentum"]]
        )
