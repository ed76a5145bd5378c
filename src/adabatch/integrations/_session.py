"""What both trainer integrations share: the policy's run inside a loop we do not own.

A host trainer calls us at fixed points of its loop; `AdaptiveSession` turns those calls into
the same pieces our own `adabatch.training.Trainer` uses — the `BatchSizeScheduler` (policy,
statistics window, decisions, the sampler it resizes), the `GradStatsTracker`, and a
`StepScaledLR` (the LR coupling applied inside ``optimizer.step()``, so that the host's LR
scheduler never sees our factor) — in this order, per logical batch::

    begin_batch()            the first micro-batch's forward is next: measure or pause
      begin_micro(mb)        each micro-batch: its loss weight, its own pass
      end_micro()
    end_batch()              after the last backward: the window takes the statistics
    (the host steps the optimizer: the LR factor is applied inside the step)
    after_step()             the policy may decide; a resize applies from the next batch
    ...
    end_epoch()              epoch-end decisions (DiveBatch, schedules in epochs)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from .._validate import check_choice
from ..data import AdaptiveLoader
from ..hparam_coupling import BETA2_RULES, WEIGHT_DECAY_RULES
from ..lr_coupling import LR_RULES, LR_SCHEDULE_UNITS, StepScaledLR
from ..policies.base import BatchSizePolicy, Decision
from ..scheduler import BatchSizeScheduler
from ..stats import GradStatsTracker
from ._feed import ChunkFeed, CountOf, MicroBatch

__all__ = ["AdaptiveSession", "check_callback_options", "loader_settings"]

# 1: adabatch 0.2 (the first integrations).
_STATE_VERSION = 1


def check_callback_options(
    where: str,
    policy: Any,
    *,
    lr_rule: str,
    beta2_rule: str,
    weight_decay_rule: str,
    lr_schedule_unit: str,
    max_physical_batch_size: Any,
    allow_auto: bool = False,
) -> None:
    """What both callbacks check when built, before any trainer runs (messages name ``where``)."""
    if not isinstance(policy, BatchSizePolicy):
        raise TypeError(
            f"{where}: policy must be a BatchSizePolicy (adabatch.policies.make_policy), got "
            f"{type(policy).__name__}"
        )
    for name, value, choices in (
        ("lr_rule", lr_rule, tuple(LR_RULES)),
        ("beta2_rule", beta2_rule, BETA2_RULES),
        ("weight_decay_rule", weight_decay_rule, WEIGHT_DECAY_RULES),
        ("lr_schedule_unit", lr_schedule_unit, LR_SCHEDULE_UNITS),
    ):
        try:
            check_choice(name, value, choices)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    auto = max_physical_batch_size == "auto" and allow_auto
    if (
        max_physical_batch_size is not None
        and not auto
        and (not isinstance(max_physical_batch_size, int) or max_physical_batch_size < 1)
    ):
        also = ', "auto"' if allow_auto else ""
        raise ValueError(
            f"{where}: max_physical_batch_size must be a positive int{also} or None, got "
            f"{max_physical_batch_size!r}"
        )


def loader_settings(dataloader: Any, where: str) -> dict[str, Any]:
    """What an `AdaptiveLoader` keeps of the user's ``DataLoader``: data, collate, workers.

    Raises a clear error for a loader we cannot take over (no map-style data set, a custom
    sampler or batch sampler whose order we would silently replace).
    """
    if not isinstance(dataloader, DataLoader):
        raise TypeError(
            f"{where}: the training data must be a torch DataLoader over a map-style data set, "
            f"got {type(dataloader).__name__}; build DataLoader(dataset, batch_size=B0, "
            "shuffle=True)"
        )
    dataset = dataloader.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"{where}: the training data set is iterable ({type(dataset).__name__}); adaptive "
            "batches need a map-style data set (with __len__ and __getitem__), so that every "
            "sample is visited once per epoch whatever the batch size"
        )
    batch_size, sampler, drop_last = dataloader.batch_size, dataloader.sampler, dataloader.drop_last
    batch_sampler = dataloader.batch_sampler
    # accelerate rebuilds the loader around a BatchSampler (wrapped per process in a shard):
    # the plain torch BatchSampler inside still says what the user asked for.
    batch_sampler = getattr(batch_sampler, "batch_sampler", batch_sampler)
    if batch_size is None and type(batch_sampler) is BatchSampler:
        batch_size, sampler = batch_sampler.batch_size, batch_sampler.sampler
        drop_last = batch_sampler.drop_last
    if batch_size is None:
        raise ValueError(
            f"{where}: the DataLoader has a custom batch_sampler "
            f"({type(batch_sampler).__name__}); the adaptive batch size replaces it: build "
            "the DataLoader with batch_size=B0 and shuffle=True instead"
        )
    # Exact types: a subclass may draw another order (weights, replacement) that the
    # resizable sampler would silently replace. accelerate's seedable one is a plain shuffle.
    kind = type(sampler)
    shuffle = kind is RandomSampler or kind.__name__ == "SeedableRandomSampler"
    shuffle = shuffle and not getattr(sampler, "replacement", False)  # with replacement: refused
    if not shuffle and kind is not SequentialSampler:
        raise ValueError(
            f"{where}: the DataLoader has a custom sampler ({type(sampler).__name__}); the "
            "adaptive loader draws its own per-epoch permutation (shuffle=True) or visits the "
            "data in order (shuffle=False): use one of those"
        )
    if drop_last:
        raise ValueError(
            f"{where}: drop_last=True is not supported with adaptive batches (whether the "
            "last batch is dropped would depend on a size decided later); use drop_last=False"
        )
    collate = dataloader.collate_fn
    workers = dataloader.num_workers
    return {
        "dataset": dataset,
        "batch_size": int(batch_size),
        "shuffle": shuffle,
        "collate_fn": None if collate is default_collate else collate,
        "num_workers": workers,
        "pin_memory": dataloader.pin_memory,
        "prefetch_factor": dataloader.prefetch_factor if workers else None,
        "persistent_workers": dataloader.persistent_workers if workers else None,
        "worker_init_fn": dataloader.worker_init_fn,
    }


class AdaptiveSession:
    """One policy's run inside a host trainer (see the module docstring for the protocol).

    Args:
        policy: the batch-size policy; its ``batch_size`` is the global logical B₀.
        settings: `loader_settings` of the user's DataLoader (batch_size excluded).
        optimizer: the host's optimizer (or its wrapper), coupled by `StepScaledLR`.
        model: the module the statistics hooks go on (only when the policy reads
            per-sample statistics).
        lr_rule: "none", "linear" or "sqrt".
        seed: the seed of the per-epoch permutations (the same on every rank).
        count_of: micro-batches per logical batch (a `CountOf`, see `ChunkFeed`).
        min_last_batch: the fewest samples of an epoch's last batch (see the sampler).
        deferred, continuous, on_draw: how the feed hands out batches (see `ChunkFeed`); a
            continuous feed takes the epoch ends itself.
        beta2_rule, weight_decay_rule: Adam's β₂ and AdamW's weight decay coupled to the
            batch (see `adabatch.hparam_coupling`).
        tracker_options: extra `GradStatsTracker` options.
    """

    def __init__(
        self,
        policy: BatchSizePolicy,
        settings: Mapping[str, Any],
        *,
        optimizer: Any,
        model: nn.Module,
        lr_rule: str,
        seed: int,
        count_of: CountOf,
        min_last_batch: int = 1,
        deferred: bool = True,
        continuous: bool = False,
        on_draw: Any = None,
        beta2_rule: str = "fixed",
        weight_decay_rule: str = "fixed",
        tracker_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = {k: v for k, v in settings.items() if k != "batch_size"}
        self.loader = AdaptiveLoader(
            batch_size=policy.batch_size, seed=seed, min_last_batch=min_last_batch, **options
        )
        # The LR factor (and β₂, weight decay) is the scheduler's, applied inside
        # optimizer.step() only: the host steps its own LR scheduler.
        self.scheduler = BatchSizeScheduler(
            policy,
            self.loader,
            optimizer,
            lr_rule=lr_rule,
            beta2_rule=beta2_rule,
            weight_decay_rule=weight_decay_rule,
            lr_in_step=True,
        )
        self.policy = self.scheduler.policy
        self.feed = ChunkFeed(
            self.loader,
            count_of,
            deferred=deferred,
            continuous=continuous,
            on_epoch_end=self.end_epoch_if_due,
            on_draw=on_draw,
        )
        self.tracker: GradStatsTracker | None = None
        if self.policy.stats_request.per_sample:
            self.tracker = GradStatsTracker(
                model,
                loss_reduction="mean",
                **self.scheduler.tracker_options,
                **dict(tracker_options or {}),
            )
        self._micro: MicroBatch | None = None  # the last micro-batch begun
        self._measuring = False
        self._batch_scope = contextlib.ExitStack()  # tracker paused for an unmeasured batch
        self._micro_scope = contextlib.ExitStack()  # a micro-batch's loss weight

    # ------------------------------------------------------------------ per logical batch
    @property
    def batch_size(self) -> int:
        """The global batch size in force (the sampler's)."""
        return self.scheduler.batch_size

    @property
    def lr(self) -> StepScaledLR:
        """The scheduler's LR coupling (applied inside ``optimizer.step()``)."""
        coupling = self.scheduler.lr_coupling
        assert isinstance(coupling, StepScaledLR)
        return coupling

    @property
    def lr_factor(self) -> float:
        """rule(B/B₀) · Π f_k, the factor the next optimizer step applies."""
        return self.lr.factor

    @property
    def lr_clock(self) -> int:
        """The samples an LR schedule followed in samples is at, the batch in hand included.

        Read between the last backward and the optimizer step (where the hosts step their
        LR schedulers): the scheduler's requested sizes so far, plus this batch's.
        """
        in_hand = 0 if self._micro is None else self._micro.requested
        return self.scheduler.nominal_samples + in_hand

    def begin_batch(self) -> None:
        """Before the first micro-batch's forward: statistics on, or the tracker paused."""
        tracker = self.tracker
        if tracker is None:
            return
        tracker.reset()  # passes since the last step (evaluation forwards) are not this batch's
        self._measuring = self.scheduler.wants_stats
        if not self._measuring:
            self._batch_scope.enter_context(tracker.paused())

    def begin_micro(self, micro: MicroBatch, weight: float | None = None) -> None:
        """Before a micro-batch's forward: its pass, weighted as its loss is.

        ``weight`` is the factor the host puts on the micro-batch's mean loss in this
        process's backward (default: nₖ·W/L, the exact mean's).
        """
        self._micro = micro
        tracker = self.tracker
        if tracker is None or not self._measuring:
            return
        self._micro_scope.close()
        weight = micro.weight if weight is None else weight
        if weight != 1.0:
            self._micro_scope.enter_context(tracker.loss_weight(weight))
        tracker.new_pass()

    def end_micro(self) -> None:
        """After a micro-batch's backward."""
        self._micro_scope.close()

    def end_batch(self) -> None:
        """After the last backward, before the optimizer step: the window takes the statistics."""
        self._micro_scope.close()
        self._batch_scope.close()
        if self.tracker is not None and self._measuring:
            self._measuring = False
            self.scheduler.observe(self.tracker.pop())

    def after_step(self) -> Decision | None:
        """After the optimizer step: the policy may decide (resize from the next batch)."""
        if self._micro is not None:
            # The host may have drawn the next batch already: say which batch was trained.
            self.scheduler.count(self._micro.global_size, self._micro.requested)
        return self.scheduler.step()

    def end_epoch(self) -> Decision | None:
        """After the epoch's last step."""
        return self.scheduler.step_epoch()

    def end_epoch_if_due(self) -> Decision | None:
        """The epoch-end decision, if the sampler's epoch is used up and its end not yet taken.

        Hosts call their epoch-end hooks also for epochs that are not the data's (an epoch
        cut short by ``limit_train_batches`` or a stop), and a checkpoint written right after
        an epoch's last step resumes with that epoch's end not yet taken: this takes each
        data epoch's end exactly once, where the uninterrupted run took it.
        """
        sampler = self.loader.sampler
        if sampler.epoch_done and sampler.epoch == self.scheduler.epoch:
            return self.end_epoch()
        return None

    def metrics(self) -> dict[str, float]:
        """What the integrations log: batch size, LR factor, the last decision's statistic."""
        out = {"batch_size": float(self.batch_size), "lr_factor": self.lr.factor}
        decision = self.scheduler.last_decision
        if decision is not None and not math.isnan(decision.value):
            out[decision.statistic] = float(decision.value)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The scheduler's (policy, window, sampler, counters, couplings); mid-batch, rewound."""
        scheduler = self.scheduler.state_dict()
        scheduler["sampler"] = self.feed.snapshot()
        return {"version": _STATE_VERSION, "scheduler": scheduler}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output: the run continues as if uninterrupted."""
        version = state.get("version")
        if version != _STATE_VERSION:
            raise ValueError(
                f"adaptive batch-size callback state version {version!r} is not supported "
                f"(this adabatch reads version {_STATE_VERSION})"
            )
        self.scheduler.load_state_dict(state["scheduler"])
        self.feed.restore(state["scheduler"]["sampler"])

    def close(self) -> None:
        """Detach the hooks (tracker, LR step hooks)."""
        self._micro_scope.close()
        self._batch_scope.close()
        if self.tracker is not None:
            self.tracker.remove()
        self.lr.remove()
