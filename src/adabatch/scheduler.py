"""`BatchSizeScheduler`: a batch-size policy driven like an LR scheduler, in your own loop.

It ties a policy (`adabatch.policies`), the resizable loader or sampler (`adabatch.data`),
the optimizer and an LR rule (`adabatch.policies.LRCoupling`)::

    policy = make_policy("norm-test", batch_size=32, eta=0.1, max_batch_size=4096)
    loader = AdaptiveLoader(dataset, policy.batch_size, seed=0)
    scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt")
    tracker = GradStatsTracker(model, **scheduler.tracker_options)
    for epoch in range(epochs):
        for inputs, targets in loader:
            optimizer.zero_grad()
            with scheduler.measure(tracker):       # statistics only when the policy asks
                loss_fn(model(inputs), targets).backward()
            optimizer.step()
            scheduler.step()                       # may resize the loader, rescale the LR
        scheduler.step_epoch()

Cadence: `measure` (or `observe`) feeds the statistics of the step about to be taken when
the policy wants them; `step` after every optimizer step; `step_epoch` after every epoch.
A resize applies from the next batch the loader yields; the LR changes at once, so the next
optimizer step (the first at the new size) uses it. With DDP, `measure` all-reduces the
statistics, and every rank reaches the same decision from the same sums.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .distributed import all_reduce_stats
from .policies.base import BatchSizePolicy, Decision
from .policies.lr_coupling import LRCoupling
from .stats.summary import GradStats

__all__ = ["BatchSizeScheduler"]


def _dataset_size(loader: Any) -> int | None:
    sampler = getattr(loader, "sampler", loader)
    size = getattr(sampler, "dataset_size", None)
    return None if size is None else int(size)


class BatchSizeScheduler:
    """Step a batch-size policy, resize the loader and couple the learning rate.

    Args:
        policy: a `BatchSizePolicy` (e.g. from `adabatch.policies.make_policy`).
        loader: an `AdaptiveLoader` or `ResizableBatchSampler` (anything with
            ``batch_size`` and ``set_batch_size``) whose batch size equals the policy's.
        optimizer: the optimizer whose LR is coupled (None: leave LRs alone).
        lr_rule: "none", "linear" or "sqrt" (see `adabatch.policies.lr_coupling`).
        lr_scheduler: your LR scheduler; it is stepped on the unscaled LRs (arguments such
            as ReduceLROnPlateau's metric go through `step_epoch` / `step`).
        lr_scheduler_interval: step it in `step_epoch` ("epoch") or in `step` ("step").

    Attributes:
        lr_coupling: the `LRCoupling` (None without an optimizer).
        step_count: optimizer steps taken so far.
        epoch: the epoch in progress.
        decisions: the decisions that changed the batch size or the LR, in order.
    """

    def __init__(
        self,
        policy: BatchSizePolicy,
        loader: Any,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        lr_rule: str = "none",
        lr_scheduler: Any | None = None,
        lr_scheduler_interval: str = "epoch",
    ) -> None:
        if not isinstance(policy, BatchSizePolicy):
            raise TypeError(
                f"policy must be a BatchSizePolicy (see adabatch.policies.POLICIES), got "
                f"{type(policy).__name__}"
            )
        if not hasattr(loader, "set_batch_size") or not hasattr(loader, "batch_size"):
            raise TypeError(
                f"loader must be resizable (an AdaptiveLoader or ResizableBatchSampler), got "
                f"{type(loader).__name__}"
            )
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}"
            )
        if lr_scheduler is not None and optimizer is None:
            raise ValueError("lr_scheduler needs the optimizer it drives (optimizer=...)")
        if optimizer is None and lr_rule != "none":
            raise ValueError(f"lr_rule={lr_rule!r} needs the optimizer (optimizer=...)")
        if policy.batch_size != policy.initial_batch_size:
            raise ValueError(
                f"the policy already moved its batch from {policy.initial_batch_size} to "
                f"{policy.batch_size}; to resume, build the scheduler from a fresh policy and "
                "call BatchSizeScheduler.load_state_dict (it restores the LR factors too)"
            )
        if policy.cadence == "step" and getattr(loader, "resize_at", "batch") == "epoch":
            raise ValueError(
                f"the {policy.name} policy decides after optimizer steps, but the loader "
                "applies resizes only at epoch starts (resize_at='epoch'): the LR would change "
                "before the batch does; use resize_at='batch'"
            )
        if getattr(policy, "rescale_lr", False) and lr_rule != "none":
            raise ValueError(
                f"DiveBatch's rescale_lr already multiplies the LR by B'/B at each resize; "
                f"lr_rule={lr_rule!r} would scale it a second time: use lr_rule='none'"
            )
        size = _dataset_size(loader)
        if size is not None:
            policy.set_dataset_size(size)
        if loader.batch_size != policy.batch_size:
            raise ValueError(
                f"the loader's batch size ({loader.batch_size}) differs from the policy's "
                f"({policy.batch_size}); build the loader with policy.batch_size"
            )
        self.policy = policy
        self.loader = loader
        self.optimizer = optimizer
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_coupling = (
            None
            if optimizer is None
            else LRCoupling(
                optimizer,
                rule=lr_rule,
                base_batch_size=policy.initial_batch_size,
                scheduler=lr_scheduler,
            )
        )
        self.step_count = 0
        self.epoch = 0
        self.decisions: list[Decision] = []

    # ------------------------------------------------------------------ statistics
    @property
    def batch_size(self) -> int:
        """The batch size in force."""
        return self.policy.batch_size

    @property
    def tracker_options(self) -> dict[str, bool]:
        """``inner_products`` / ``coordinates`` for the `GradStatsTracker` the policy needs."""
        return self.policy.stats_request.tracker_options()

    @property
    def wants_stats(self) -> bool:
        """Whether the policy wants the statistics of the step about to be taken."""
        return self.policy.wants_stats(step=self.step_count, epoch=self.epoch)

    @contextlib.contextmanager
    def measure(self, tracker: Any | None) -> Iterator[None]:
        """Run the step's forward/backward inside; statistics are taken if the policy wants.

        When it does, the tracker's statistics of the block are popped, all-reduced across
        ranks and passed to `observe`; otherwise the block runs with the tracker paused, at
        the cost of a plain backward. ``tracker=None`` is allowed for policies that read no
        statistics (a constant batch, a schedule), which then need no hooks at all.
        """
        if tracker is None:
            if self.policy.stats_request.per_sample:
                raise ValueError(
                    f"the {self.policy.name} policy reads per-sample statistics: pass a "
                    "GradStatsTracker(model, **scheduler.tracker_options) to measure()"
                )
            yield
            return
        tracker.reset()  # passes from outside the block (e.g. evaluation) are not this step's
        if not self.wants_stats:
            with tracker.paused():
                yield
            return
        yield
        self.observe(all_reduce_stats(tracker.pop()))

    def observe(self, stats: GradStats) -> None:
        """Feed the (all-reduced) statistics of the step about to be taken."""
        self.policy.observe(stats)

    # ------------------------------------------------------------------ stepping
    def step(self, *lr_scheduler_args: Any) -> Decision | None:
        """Call after every optimizer step; returns the decision taken, if any.

        With ``lr_scheduler_interval="step"``, arguments go to the LR scheduler's ``step``.
        """
        decision = self.policy.after_step(step=self.step_count, epoch=self.epoch)
        self.step_count += 1
        self._apply(decision)
        if self.lr_scheduler_interval == "step":
            self._step_lr_scheduler(lr_scheduler_args)
        return decision

    def step_epoch(self, *lr_scheduler_args: Any) -> Decision | None:
        """Call after the last step of every epoch; returns the decision taken, if any.

        With ``lr_scheduler_interval="epoch"``, arguments go to the LR scheduler's ``step``
        (e.g. ``scheduler.step_epoch(val_loss)`` for ``ReduceLROnPlateau``).
        """
        decision = self.policy.after_epoch(epoch=self.epoch)
        self.epoch += 1
        self._apply(decision)
        if self.lr_scheduler_interval == "epoch":
            self._step_lr_scheduler(lr_scheduler_args)
        return decision

    def _step_lr_scheduler(self, args: tuple[Any, ...]) -> None:
        if self.lr_coupling is not None and self.lr_coupling.scheduler is not None:
            self.lr_coupling.scheduler_step(*args)

    def _apply(self, decision: Decision | None) -> None:
        if decision is None:
            return
        if decision.changed:
            self.loader.set_batch_size(decision.new_batch_size)
        if self.lr_coupling is not None:
            self.lr_coupling.update(decision.new_batch_size, decision.lr_factor)
        if decision.changed or decision.lr_factor != 1.0:
            self.decisions.append(decision)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Policy, LR coupling (with the LR scheduler), loader, step and epoch counters."""
        return {
            "policy": self.policy.state_dict(),
            "lr": None if self.lr_coupling is None else self.lr_coupling.state_dict(),
            "loader": self.loader.state_dict() if hasattr(self.loader, "state_dict") else None,
            "step_count": self.step_count,
            "epoch": self.epoch,
            "decisions": [dataclasses.asdict(d) for d in self.decisions],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict`: the run continues as if it had not stopped.

        Load the optimizer's own state first: this rewrites its LRs to the coupled values.
        """
        self.policy.load_state_dict(state["policy"])
        if self.lr_coupling is not None and state.get("lr") is not None:
            self.lr_coupling.load_state_dict(state["lr"])
        if state.get("loader") is not None and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["loader"])
        if self.loader.batch_size != self.policy.batch_size:
            self.loader.set_batch_size(self.policy.batch_size)
        self.step_count = int(state["step_count"])
        self.epoch = int(state["epoch"])
        self.decisions = [Decision(**d) for d in state["decisions"]]

    def __repr__(self) -> str:
        return (
            f"BatchSizeScheduler({self.policy!r}, step {self.step_count}, epoch {self.epoch}, "
            f"lr rule {None if self.lr_coupling is None else self.lr_coupling.rule!r})"
        )
