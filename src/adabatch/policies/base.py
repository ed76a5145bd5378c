"""What every batch-size policy shares: bounds, the decision record, the cadence contract.

A policy is a small state machine driven by the training loop (or by `BatchSizeScheduler`):

=========================================  ===============================================
call                                       when
=========================================  ===============================================
``wants_stats(step=s, epoch=e)``           before optimizer step s (0-based, counted over
                                           the whole run) of epoch e: compute statistics?
``observe(stats)``                         after step s's backward, when it wanted them
                                           (the statistics of the *global* batch)
``after_step(step=s, epoch=e)``            after optimizer step s → a `Decision` or None
``after_epoch(epoch=e)``                   after the last step of epoch e → a `Decision`
                                           or None
=========================================  ===============================================

A decision applies from the next batch on. Decisions are deterministic functions of the
statistics observed and of the policy's explicit state, so that ranks fed the same
all-reduced statistics agree without a broadcast.

Every policy clamps its batch size to ``[min_batch_size, max_batch_size]``, rounds it to a
multiple of ``multiple_of`` (up, then down if that passes the cap), never exceeds the data
set size when it is known, and returns Python ints. Statistics that are not finite (a
diverged loss, an overflow) leave the batch unchanged and warn once per policy.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from typing_extensions import TypedDict

from .._validate import as_int
from ..stats.estimators import mean_sq_norm
from ..stats.summary import GradStats

__all__ = [
    "BatchSizePolicy",
    "Bounds",
    "Decision",
    "StatsRequest",
]


class Bounds(TypedDict, total=False):
    """The keyword arguments every policy accepts (``**bounds``), see `BatchSizePolicy`."""

    min_batch_size: int
    max_batch_size: int | None
    multiple_of: int
    dataset_size: int | None


@dataclasses.dataclass(frozen=True)
class StatsRequest:
    """Which per-sample statistics a policy reads: pass these to the engine or tracker.

    Attributes:
        per_sample: the policy reads a `GradStats` (Σgᵢ and S2) through `observe`.
        inner_products: it also needs P2 (``inner_products=True`` in the engine).
        coordinates: it also needs Σgᵢ⊙gᵢ (``coordinates=True``).
        from_caller: the policy is fed by the caller's own methods (e.g. the noise scale's
            ``observe_norms``), not from a tracker: a generic loop cannot drive it.
    """

    per_sample: bool = False
    inner_products: bool = False
    coordinates: bool = False
    from_caller: bool = False

    def tracker_options(self) -> dict[str, bool]:
        """Keyword arguments for `GradStatsTracker` / `compute_stats`."""
        return {"inner_products": self.inner_products, "coordinates": self.coordinates}


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision of a policy, with the statistic behind it.

    Attributes:
        step: the optimizer step after which it was taken (None for an epoch-end decision).
        epoch: the epoch in which it was taken.
        old_batch_size: the batch size before.
        new_batch_size: the batch size from the next batch on.
        statistic: the name of the quantity the rule read (e.g. ``"T"``, ``"diversity"``).
        value: its value (NaN when the statistics were not usable).
        suggested: the size the rule asked for before rounding and clamping.
        lr_factor: multiply the learning rate by this from now on (1: leave it), e.g.
            DiveBatch's B'/B rescale or the LR factor of a schedule.
    """

    step: int | None
    epoch: int
    old_batch_size: int
    new_batch_size: int
    statistic: str
    value: float
    suggested: float
    lr_factor: float = 1.0

    @property
    def changed(self) -> bool:
        """Whether the batch size changed."""
        return self.new_batch_size != self.old_batch_size


class BatchSizePolicy:
    """Base class: bounds, current batch size, cadence defaults, state_dict.

    Subclasses set ``name``, override the cadence methods they use, and put their
    configuration in ``self._config`` (constructor keyword → value) and their evolving state
    in `_extra_state` / `_load_extra_state`.

    Args:
        batch_size: the initial batch size (global, across ranks).
        min_batch_size: the smallest size the policy may choose (default 1).
        max_batch_size: the largest (default: the data set size, else unbounded).
        multiple_of: round every chosen size to a multiple of this (e.g. the number of
            ranks times a micro-batch); the initial size must already be one.
        dataset_size: N; caps the batch, and DiveBatch's rule reads it.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        batch_size: int,
        *,
        min_batch_size: int = 1,
        max_batch_size: int | None = None,
        multiple_of: int = 1,
        dataset_size: int | None = None,
    ) -> None:
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        self.min_batch_size = as_int(min_batch_size, "min_batch_size", minimum=1)
        self.multiple_of = as_int(multiple_of, "multiple_of", minimum=1)
        self.dataset_size = (
            None if dataset_size is None else as_int(dataset_size, "dataset_size", minimum=1)
        )
        self._max_requested = (
            None if max_batch_size is None else as_int(max_batch_size, "max_batch_size", minimum=1)
        )
        self.max_batch_size = self._cap()
        if self.max_batch_size < self.min_batch_size:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}, after capping at the data set size "
                f"and rounding down to a multiple of {self.multiple_of}) is below "
                f"min_batch_size ({self.min_batch_size}); raise max_batch_size or lower "
                "min_batch_size"
            )
        if not self.min_batch_size <= batch_size <= self.max_batch_size:
            raise ValueError(
                f"batch_size {batch_size} is outside [min_batch_size, max_batch_size] = "
                f"[{self.min_batch_size}, {self.max_batch_size}]"
            )
        if batch_size % self.multiple_of:
            raise ValueError(
                f"batch_size {batch_size} is not a multiple of multiple_of={self.multiple_of}"
            )
        self._batch_size = batch_size
        self._initial_batch_size = batch_size
        self._warned = False
        self._config: dict[str, Any] = {}
        self.last_decision: Decision | None = None

    def _cap(self) -> int | float:
        cap: int | float = math.inf
        if self._max_requested is not None:
            cap = self._max_requested
        if self.dataset_size is not None:
            cap = min(cap, self.dataset_size)
        if math.isinf(cap):
            return cap
        return int(cap) // self.multiple_of * self.multiple_of

    # ------------------------------------------------------------------ public state
    @property
    def batch_size(self) -> int:
        """The batch size in force (global, across ranks)."""
        return self._batch_size

    @property
    def initial_batch_size(self) -> int:
        """The batch size the policy started from (B₀ of the LR rules)."""
        return self._initial_batch_size

    @property
    def stats_request(self) -> StatsRequest:
        """The statistics `observe` needs (none by default)."""
        return StatsRequest()

    @property
    def cadence(self) -> str:
        """When decisions happen: "step" (in `after_step`) or "epoch" (in `after_epoch`)."""
        return "epoch"

    @property
    def at_max(self) -> bool:
        """Whether the batch has reached the cap (growing policies then stop measuring)."""
        return self._batch_size >= self.max_batch_size

    def set_dataset_size(self, dataset_size: int) -> None:
        """Bind N after construction (what `BatchSizeScheduler` does from its loader).

        Raises if the policy was built with a different N or its batch exceeds the new cap.
        """
        dataset_size = as_int(dataset_size, "dataset_size", minimum=1)
        if self.dataset_size is not None and self.dataset_size != dataset_size:
            raise ValueError(
                f"{self.name} policy was configured for dataset_size={self.dataset_size}, but "
                f"the loader has {dataset_size} samples"
            )
        self.dataset_size = dataset_size
        self.max_batch_size = self._cap()
        if self._batch_size > self.max_batch_size or self.min_batch_size > self.max_batch_size:
            raise ValueError(
                f"the data set has {dataset_size} samples: batch_size {self._batch_size} or "
                f"min_batch_size {self.min_batch_size} exceeds the cap {self.max_batch_size}"
            )

    # ------------------------------------------------------------------ cadence
    def wants_stats(self, *, step: int, epoch: int) -> bool:
        """Whether `observe` wants the statistics of step ``step`` (default: never)."""
        return False

    def observe(self, stats: GradStats) -> None:
        """Take the (all-reduced) statistics of the step that `wants_stats` asked for."""
        raise RuntimeError(f"the {self.name!r} policy reads no statistics")

    def after_step(self, *, step: int, epoch: int) -> Decision | None:
        """Called after every optimizer step; returns a decision when one is taken."""
        return None

    def after_epoch(self, *, epoch: int) -> Decision | None:
        """Called after the last step of each epoch; returns a decision when one is taken."""
        return None

    # ------------------------------------------------------------------ helpers
    def clamp(self, size: float) -> int:
        """``size`` rounded up to an integer multiple of ``multiple_of`` within the bounds.

        ``inf`` gives ``max_batch_size``; NaN is a caller error (decide before clamping).
        """
        if math.isnan(size):
            raise ValueError("cannot clamp a NaN batch size")
        if size >= self.max_batch_size:
            return int(self.max_batch_size)
        m = self.multiple_of
        rounded = max(math.ceil(size), self.min_batch_size)
        rounded = -(-rounded // m) * m
        return int(min(rounded, self.max_batch_size))

    def grow_to(
        self,
        size: float,
        *,
        step: int | None,
        epoch: int,
        statistic: str,
        value: float | None = None,
        monotone: bool = True,
    ) -> Decision:
        """Decide ``clamp(size)`` (never below the current batch when ``monotone``).

        ``value`` is the statistic recorded in the decision (default: ``size`` itself). NaN
        keeps the batch (warning once); so does ``inf`` when the policy has no cap, since
        there is no batch size to go to.
        """
        if math.isnan(size):
            return self._keep(
                step=step,
                epoch=epoch,
                statistic=statistic,
                why=f"the {statistic} statistic is undefined (non-finite statistics or b < 2)",
            )
        if math.isinf(size) and math.isinf(self.max_batch_size):
            return self._keep(
                step=step,
                epoch=epoch,
                statistic=statistic,
                why=f"{statistic} is infinite and the policy has no cap; set max_batch_size or "
                "dataset_size",
            )
        new = self.clamp(size)
        if monotone:
            new = max(new, self._batch_size)
        return self._decide(
            new,
            step=step,
            epoch=epoch,
            statistic=statistic,
            value=size if value is None else value,
            suggested=size,
        )

    def stats_finite(self, stats: GradStats) -> bool:
        """Whether S2, ‖Σgᵢ‖² and (if present) P2 are finite."""
        values = [float(stats.sum_sq_norms), mean_sq_norm(stats) if stats.num_samples else 0.0]
        if stats.sum_sq_inner is not None:
            values.append(float(stats.sum_sq_inner))
        return all(math.isfinite(v) for v in values)

    def warn_once(self, message: str) -> None:
        """Warn (RuntimeWarning) the first time only, for this policy instance."""
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.name} policy: {message}", RuntimeWarning, stacklevel=3)

    def _decide(
        self,
        new_size: int,
        *,
        step: int | None,
        epoch: int,
        statistic: str,
        value: float,
        suggested: float,
        lr_factor: float = 1.0,
    ) -> Decision:
        decision = Decision(
            step=step,
            epoch=epoch,
            old_batch_size=self._batch_size,
            new_batch_size=int(new_size),
            statistic=statistic,
            value=float(value),
            suggested=float(suggested),
            lr_factor=float(lr_factor),
        )
        self._batch_size = int(new_size)
        self.last_decision = decision
        return decision

    def _keep(self, *, step: int | None, epoch: int, statistic: str, why: str) -> Decision:
        """Keep the batch because the statistics were unusable, warning once."""
        self.warn_once(f"{why}; keeping batch size {self._batch_size}")
        return self._decide(
            self._batch_size,
            step=step,
            epoch=epoch,
            statistic=statistic,
            value=math.nan,
            suggested=math.nan,
        )

    # ------------------------------------------------------------------ checkpoints
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this policy (before any decision)."""
        return {
            "batch_size": self._initial_batch_size,
            "min_batch_size": self.min_batch_size,
            "max_batch_size": self._max_requested,
            "multiple_of": self.multiple_of,
            "dataset_size": self.dataset_size,
            **self._config,
        }

    def state_dict(self) -> dict[str, Any]:
        """Configuration and state; `load_state_dict` on a policy of the same config resumes."""
        return {
            "name": self.name,
            "config": self.config(),
            "batch_size": self._batch_size,
            "warned": self._warned,
            "last_decision": None
            if self.last_decision is None
            else dataclasses.asdict(self.last_decision),
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` saved (the configuration must match)."""
        if state.get("name") != self.name:
            raise ValueError(f"state_dict is of a {state.get('name')!r} policy, not {self.name!r}")
        saved = dict(state["config"])
        mine = self.config()
        # dataset_size may be bound later (by the scheduler): adopt the saved one.
        if mine.get("dataset_size") is None and saved.get("dataset_size") is not None:
            self.set_dataset_size(saved["dataset_size"])
            mine = self.config()
        if saved != mine:
            diff = sorted(k for k in saved.keys() | mine.keys() if saved.get(k) != mine.get(k))
            raise ValueError(
                f"state_dict was saved by a {self.name} policy configured differently in "
                f"{diff}: saved {[saved.get(k) for k in diff]}, this one "
                f"{[mine.get(k) for k in diff]}"
            )
        self._batch_size = as_int(state["batch_size"], "batch_size", minimum=1)
        self._warned = bool(state["warned"])
        last = state.get("last_decision")
        self.last_decision = None if last is None else Decision(**last)
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None)
        return f"{type(self).__name__}({config}; batch_size now {self._batch_size})"
