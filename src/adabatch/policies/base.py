"""What every batch-size policy shares: bounds, cadence, the decision record, the pure protocol.

A policy is a *configuration* (a frozen dataclass: its fields are its options) plus a pure
decision function, in the manner of optax's transforms::

    state = policy.init()
    state, decision = policy.decide(state, stats, batch_size=b, step=s, epoch=e)

* The configuration never changes while training runs; it states up front which statistics
  the policy reads (`stats_request`) and when it is consulted (`cadence`).
* The state is an explicit, immutable value (a NamedTuple of plain numbers; ``()`` for the
  policies that keep none) that the caller holds and passes back.
* The batch size in force, the optimizer step and the epoch are *arguments*: the policy keeps
  no copy of them. The sampler owns the batch size (`adabatch.data.ResizableBatchSampler`);
  `adabatch.BatchSizeScheduler` drives the whole protocol in a training loop.

`decide` returns a `Decision` (or None: nothing to say at this point). A decision applies from
the next batch on. Decisions are deterministic functions of the statistics and the state, so
that ranks fed the same all-reduced statistics agree without a broadcast.

Every policy clamps its batch size to ``[min_batch_size, cap]`` with cap = min(max_batch_size,
dataset_size), rounds it to a multiple of ``multiple_of`` (up, then down if that passes the
cap), and returns Python ints. Statistics that are not finite (a diverged loss, an overflow)
keep the batch; the decision then carries a ``note`` saying why, which the scheduler turns
into a warning (once).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from .._validate import as_int, as_optional_int
from ..stats.estimators import mean_sq_norm
from ..stats.summary import GradStats

__all__ = [
    "NO_STATE",
    "BatchSizePolicy",
    "Cadence",
    "Decision",
    "StatsRequest",
    "state_from_plain",
    "state_to_plain",
]

#: The state of the policies that keep none.
NO_STATE: tuple[()] = ()


@dataclasses.dataclass(frozen=True)
class StatsRequest:
    """Which per-sample statistics a policy reads: pass these to the engine or tracker.

    Attributes:
        per_sample: the policy reads a `GradStats` of per-sample statistics (Σgᵢ and S2).
        inner_products: it also needs P2 (``inner_products=True`` in the engine).
        coordinates: it also needs Σgᵢ⊙gᵢ (``coordinates=True``).
    """

    per_sample: bool = False
    inner_products: bool = False
    coordinates: bool = False

    def tracker_options(self) -> dict[str, bool]:
        """Keyword arguments for `GradStatsTracker` / `compute_stats`."""
        return {"inner_products": self.inner_products, "coordinates": self.coordinates}


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When the loop consults a policy, and which steps it measures for it.

    Decision points are the optimizer steps s (``unit="step"``: after the step) or the epochs e
    (``unit="epoch"``: at the epoch's end) whose index i satisfies i mod ``every`` =
    ``offset``. The steps measured for a decision are those of the ``window`` units that end at
    it (0: the policy reads no statistics). Growing policies stop measuring once the batch is
    at its cap, unless ``measure_at_cap``.

    Examples: the sampling tests of AdAdaGrad's code test at steps 0, k, 2k, …
    (``Cadence("step", every=k, window=1)``); DiveBatch measures the whole epoch before every
    R-th epoch end (``Cadence("epoch", every=R, offset=R - 1, window=1)``).
    """

    unit: Literal["step", "epoch"] = "epoch"
    every: int = 1
    offset: int = 0
    window: int = 0
    measure_at_cap: bool = False

    def __post_init__(self) -> None:
        if self.unit not in ("step", "epoch"):
            raise ValueError(f"cadence unit must be 'step' or 'epoch', got {self.unit!r}")
        every = as_int(self.every, "every", minimum=1)
        if not 0 <= as_int(self.offset, "offset") < every:
            raise ValueError(f"offset must be in [0, every={every}), got {self.offset}")
        if not 0 <= as_int(self.window, "window") <= every:
            raise ValueError(f"window must be in [0, every={every}], got {self.window}")

    def decides_at(self, index: int) -> bool:
        """Whether step (or epoch) ``index`` is a decision point."""
        return index % self.every == self.offset

    def measures(self, index: int) -> bool:
        """Whether step (or epoch) ``index`` lies in the window of the next decision point."""
        return (self.offset - index) % self.every < self.window

    def measuring(self, batch_size: int, cap: int) -> bool:
        """Whether the policy measures at all at ``batch_size``.

        It does when it reads statistics and, unless ``measure_at_cap``, the batch is below
        its ``cap``.
        """
        return self.window > 0 and (self.measure_at_cap or batch_size < cap)


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
        lr_factor: multiply the learning rate by this from now on (1: leave it), e.g. the
            LR factor of a schedule (Devarakonda et al.'s gamma, Smith et al.'s fallback).
        note: why the batch was kept against the rule (unusable statistics), else None.
    """

    step: int | None
    epoch: int
    old_batch_size: int
    new_batch_size: int
    statistic: str
    value: float
    suggested: float
    lr_factor: float = 1.0
    note: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the batch size changed."""
        return self.new_batch_size != self.old_batch_size


@dataclasses.dataclass(frozen=True)
class BatchSizePolicy:
    """Base class: the bounds every policy accepts, the protocol's defaults, pure helpers.

    Subclasses are frozen dataclasses (``kw_only=True``) whose fields are their options; they
    set ``name`` and override `cadence`, `stats_request`, `init` and `decide` as needed.

    Args:
        batch_size: B₀, the initial batch size (global, across ranks).
        min_batch_size: the smallest size the policy may choose (default 1).
        max_batch_size: the largest (default: the data set size, else unbounded).
        multiple_of: round every chosen size to a multiple of this (e.g. the number of
            ranks times a micro-batch); the initial size must already be one.
        dataset_size: N; caps the batch, and DiveBatch's rule reads it. The scheduler fills it
            in from the sampler when it is not given.
    """

    name: ClassVar[str] = ""
    #: Whether `decide` reads ``samples`` (a checkpoint without the sample clock cannot resume it).
    reads_samples: ClassVar[bool] = False

    batch_size: int
    _: dataclasses.KW_ONLY
    min_batch_size: int = 1
    max_batch_size: int | None = None
    multiple_of: int = 1
    dataset_size: int | None = None

    def __post_init__(self) -> None:
        # Normalise numpy integers and the like to int (frozen: through object.__setattr__).
        for key in ("batch_size", "min_batch_size", "multiple_of"):
            object.__setattr__(self, key, as_int(getattr(self, key), key, minimum=1))
        for key in ("max_batch_size", "dataset_size"):
            object.__setattr__(self, key, as_optional_int(getattr(self, key), key, minimum=1))
        if self.cap < self.min_batch_size:
            raise ValueError(
                f"max_batch_size ({self.cap}, after capping at the data set size and rounding "
                f"down to a multiple of {self.multiple_of}) is below min_batch_size "
                f"({self.min_batch_size}); raise max_batch_size or lower min_batch_size"
            )
        if not self.min_batch_size <= self.batch_size <= self.cap:
            raise ValueError(
                f"batch_size {self.batch_size} is outside [min_batch_size, max_batch_size] = "
                f"[{self.min_batch_size}, {self.cap}]"
            )
        if self.batch_size % self.multiple_of:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of multiple_of={self.multiple_of}"
            )

    # ------------------------------------------------------------------ what it declares
    @property
    def cap(self) -> int | float:
        """The largest batch it may choose: min(max_batch_size, N), a multiple of multiple_of.

        ``inf`` when neither bound is given.
        """
        bounds = [b for b in (self.max_batch_size, self.dataset_size) if b is not None]
        if not bounds:
            return math.inf
        return min(bounds) // self.multiple_of * self.multiple_of

    @property
    def stats_request(self) -> StatsRequest:
        """The statistics `decide` reads (none by default)."""
        return StatsRequest()

    @property
    def cadence(self) -> Cadence:
        """When `decide` is called (default: at every epoch end, with no statistics)."""
        return Cadence("epoch")

    def init(self) -> Any:
        """The state before the first decision (``NO_STATE`` for stateless policies)."""
        return NO_STATE

    def decide(
        self,
        state: Any,
        stats: Any,
        *,
        batch_size: int,
        step: int | None,
        epoch: int,
        samples: int = 0,
    ) -> tuple[Any, Decision | None]:
        """The new state and the decision at a decision point of the `cadence`.

        Args:
            state: what `init` or the previous `decide` returned.
            stats: the window's statistics (a `GradStats` summed over the measured steps,
                all-reduced across ranks), or None when nothing was measured.
            batch_size: the batch size in force (the sampler's).
            step: the optimizer step just taken (0-based, over the whole run); None at an
                epoch end.
            epoch: the epoch in progress (0-based).
            samples: training samples consumed so far (global, all ranks), the batch just
                trained included: the clock of schedules in samples (or tokens). A decision
                after the step that brings it to c sets the batch of the next step, as
                Megatron's ramp sizes the step that starts at c consumed samples.
        """
        return state, None

    # ------------------------------------------------------------------ pure helpers
    def bind(self, dataset_size: int) -> BatchSizePolicy:
        """This policy with N = ``dataset_size`` (what `BatchSizeScheduler` does from its sampler).

        Raises if the policy was configured for another N, or if its batch exceeds the new cap.
        """
        dataset_size = as_int(dataset_size, "dataset_size", minimum=1)
        if self.dataset_size is not None and self.dataset_size != dataset_size:
            raise ValueError(
                f"{self.name} policy was configured for dataset_size={self.dataset_size}, but "
                f"the loader has {dataset_size} samples"
            )
        try:
            return dataclasses.replace(self, dataset_size=dataset_size)
        except ValueError as exc:
            raise ValueError(f"the data set has {dataset_size} samples: {exc}") from None

    def clamp(self, size: float) -> int:
        """``size`` rounded up to an integer multiple of ``multiple_of`` within the bounds.

        ``inf`` gives the cap; NaN is a caller error (decide before clamping).
        """
        if math.isnan(size):
            raise ValueError("cannot clamp a NaN batch size")
        if size >= self.cap:
            return int(self.cap)
        m = self.multiple_of
        rounded = max(math.ceil(size), self.min_batch_size)
        rounded = -(-rounded // m) * m
        return int(min(rounded, self.cap))

    def grow_to(
        self,
        size: float,
        *,
        batch_size: int,
        step: int | None,
        epoch: int,
        statistic: str,
        value: float | None = None,
        monotone: bool = True,
    ) -> Decision:
        """Decide ``clamp(size)`` from ``batch_size`` (never below it when ``monotone``).

        ``value`` is the statistic recorded in the decision (default: ``size`` itself). NaN
        keeps the batch (with a note); so does ``inf`` when the policy has no cap, since there
        is no batch size to go to.
        """
        if math.isnan(size):
            return self.keep(
                batch_size=batch_size,
                step=step,
                epoch=epoch,
                statistic=statistic,
                why=f"the {statistic} statistic is undefined (non-finite statistics or b < 2)",
            )
        if math.isinf(size) and math.isinf(self.cap):
            return self.keep(
                batch_size=batch_size,
                step=step,
                epoch=epoch,
                statistic=statistic,
                why=f"{statistic} is infinite and the policy has no cap; set max_batch_size or "
                "dataset_size",
            )
        new = self.clamp(size)
        if monotone:
            new = max(new, batch_size)
        return Decision(
            step=step,
            epoch=epoch,
            old_batch_size=batch_size,
            new_batch_size=new,
            statistic=statistic,
            value=float(size if value is None else value),
            suggested=float(size),
        )

    def keep(
        self, *, batch_size: int, step: int | None, epoch: int, statistic: str, why: str
    ) -> Decision:
        """Keep the batch because the statistics were unusable; ``why`` becomes the note."""
        return Decision(
            step=step,
            epoch=epoch,
            old_batch_size=batch_size,
            new_batch_size=batch_size,
            statistic=statistic,
            value=math.nan,
            suggested=math.nan,
            note=f"{self.name} policy: {why}; keeping batch size {batch_size}",
        )

    @staticmethod
    def stats_finite(stats: GradStats) -> bool:
        """Whether S2, ‖Σgᵢ‖² and (if present) P2 are finite."""
        values = [float(stats.sum_sq_norms), mean_sq_norm(stats) if stats.num_samples else 0.0]
        if stats.sum_sq_inner is not None:
            values.append(float(stats.sum_sq_inner))
        return all(math.isfinite(v) for v in values)

    # ------------------------------------------------------------------ checkpoints
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this policy (tuples as lists, for JSON)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    def state_dict(self) -> dict[str, Any]:
        """Name and configuration: `adabatch.policies.policy_from_state_dict` rebuilds it."""
        return {"name": self.name, "config": self.config()}

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise unless ``state`` (a `state_dict`) was saved by a policy configured like this one.

        The data set size is compared only when both sides have one (it may be bound later).
        """
        if state.get("name") != self.name:
            raise ValueError(f"state_dict is of a {state.get('name')!r} policy, not {self.name!r}")
        saved, mine = dict(state["config"]), self.config()
        if saved.get("dataset_size") is None or mine.get("dataset_size") is None:
            saved.pop("dataset_size", None)
            mine.pop("dataset_size", None)
        if saved != mine:
            diff = sorted(k for k in saved.keys() | mine.keys() if saved.get(k) != mine.get(k))
            raise ValueError(
                f"state_dict was saved by a {self.name} policy configured differently in "
                f"{diff}: saved {[saved.get(k) for k in diff]}, this one "
                f"{[mine.get(k) for k in diff]}"
            )

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None)
        return f"{type(self).__name__}({config})"


def state_to_plain(state: Any) -> Any:
    """A policy state (nested NamedTuples of numbers) as nested dicts, for checkpoints."""
    if isinstance(state, tuple) and hasattr(state, "_asdict"):
        return {k: state_to_plain(v) for k, v in state._asdict().items()}
    if isinstance(state, tuple):
        return [state_to_plain(v) for v in state]
    return state


def state_from_plain(template: Any, plain: Any) -> Any:
    """Inverse of `state_to_plain`, shaped by ``template`` (e.g. ``policy.init()``)."""
    if isinstance(template, tuple) and hasattr(template, "_asdict"):
        fields = type(template)._fields
        if not isinstance(plain, Mapping) or set(plain) != set(fields):
            raise ValueError(
                f"policy state must have the fields {list(fields)}, got "
                f"{sorted(plain) if isinstance(plain, Mapping) else plain!r}"
            )
        return type(template)(
            **{k: state_from_plain(getattr(template, k), plain[k]) for k in fields}
        )
    if isinstance(template, tuple):
        if len(plain) != len(template):
            raise ValueError(f"policy state must have {len(template)} items, got {plain!r}")
        return tuple(state_from_plain(t, p) for t, p in zip(template, plain, strict=True))
    return type(template)(plain) if isinstance(template, (int, float)) else plain
