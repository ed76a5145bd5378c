"""`BatchSizeScheduler`: a batch-size policy driven like an LR scheduler, in your own loop.

It ties a policy (`adabatch.policies`), the resizable sampler — directly or inside an
`adabatch.data.AdaptiveLoader` —, the optimizer and an LR rule (`adabatch.lr_coupling`)::

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

What it owns, and what it does not. The batch size, the epoch and the position belong to the
sampler: the scheduler reads the size from it and writes decisions to it. The policy is a pure
configuration: the scheduler holds its state and the statistics measured since its last
decision (a `StatsWindow`), and counts what only the loop knows — optimizer steps taken and
epochs ended (like an LR scheduler counts its ``step()`` calls).

Cadence (the policy's `Cadence`): `measure` (or `observe`) feeds the statistics of the step
about to be taken when the step lies in the window of a decision; `step` after every optimizer
step and `step_epoch` after every epoch call the policy at its decision points with the
window's statistics, summed and all-reduced across ranks (one collective per decision). A
resize applies from the next batch the loader yields; the LR changes at once, so the next
optimizer step (the first at the new size) uses it. Every rank reaches the same decision from
the same sums.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ._validate import as_optional_int, check_choice
from .distributed import all_reduce_stats, is_distributed
from .distributed.agreement import check_agreement
from .hparam_coupling import HyperparameterCoupling
from .lr_coupling import (
    LR_SCHEDULE_UNITS,
    LRCoupling,
    StepScaledLR,
    check_sample_schedule,
    place_schedule,
)
from .policies.base import BatchSizePolicy, Decision, state_from_plain, state_to_plain
from .stats.summary import GradStats
from .stats.window import StatsWindow

__all__ = ["BatchSizeScheduler"]

# 1: adabatch 0.1 (the policy held the batch size and its window); 2: no sample clock;
# 3: this layout (the samples consumed, real and nominal).
_STATE_VERSION = 3


def _sampler_of(loader: Any) -> Any:
    """The `ResizableBatchSampler` itself, or the one inside an `AdaptiveLoader`."""
    sampler = getattr(loader, "sampler", loader)
    for needed in ("batch_size", "set_batch_size", "dataset_size"):
        if not hasattr(sampler, needed):
            raise TypeError(
                f"loader must be resizable (an AdaptiveLoader or ResizableBatchSampler), got "
                f"{type(loader).__name__}"
            )
    return sampler


class BatchSizeScheduler:
    """Run a batch-size policy: measure, decide, resize the sampler, couple the learning rate.

    Args:
        policy: a `BatchSizePolicy` (e.g. from `adabatch.policies.make_policy`); its
            ``batch_size`` (B₀) must be the sampler's initial size.
        loader: an `AdaptiveLoader` or `ResizableBatchSampler`: the owner of the batch size.
        optimizer: the optimizer whose LR is coupled (None: leave LRs alone).
        lr_rule: "none", "linear" or "sqrt" (see `adabatch.lr_coupling`).
        lr_scheduler: your LR scheduler; it is stepped on the unscaled LRs (arguments such
            as ReduceLROnPlateau's metric go through `step_epoch` / `step`).
        lr_scheduler_interval: step it in `step_epoch` ("epoch") or in `step` ("step").
        lr_schedule_unit: with ``lr_scheduler_interval="step"``: "steps" (once per optimizer
            step) or "samples" — a closed-form schedule planned in steps at B₀ (LambdaLR,
            OneCycleLR) is placed at ⌊samples/B₀⌋ before each step, so a warm-up or a decay
            ends after the samples it was planned for, however the batch grows (see
            `adabatch.lr_coupling.place_schedule`).
        beta2_rule: "fixed" or "half-life": Adam's β₂ at a fixed half-life in tokens,
            β₂(B₀)^(B/B₀) (see `adabatch.hparam_coupling`).
        weight_decay_rule: "fixed" or "timescale": AdamW's λ(B₀)·(B/B₀)/(η/η₀), which keeps
            its timescale B/(ηλD) (see `adabatch.hparam_coupling`).
        local_steps: H for local SGD (`adabatch.local.LocalSGD`): the workers synchronise
            every H steps (a round may end earlier, e.g. at an epoch's end), and the policy
            sizes the *local* batch b (its ``batch_size`` is the loader's global batch over
            the world size); it measures the first step of each round and decides only at the
            rounds, in `end_round`. None: every step's
            batch is one global batch (a single process, or DDP).
        lr_in_step: apply the LR factor only while ``optimizer.step()`` runs
            (`adabatch.lr_coupling.StepScaledLR`), for a loop that steps its own LR scheduler
            (the trainer integrations); the optimizer may be a wrapper holding it as
            ``.optimizer``. Default: `LRCoupling`, which steps ``lr_scheduler`` itself.

    Attributes:
        policy: the policy, bound to the sampler's data set size.
        sampler: the sampler whose batch size the decisions set.
        lr_coupling: the `LRCoupling` or, with ``lr_in_step``, the `StepScaledLR` (None
            without an optimizer).
        hparam_coupling: the `HyperparameterCoupling` of β₂ and weight decay (None when both
            rules are "fixed").
        step_count: optimizer steps taken so far.
        epoch: the epoch in progress (epochs ended so far).
        samples: training samples consumed so far (global; counted in `step` from the
            sampler's last batch, or what `count` announced).
        nominal_samples: the sum of the steps' requested batch sizes (the clock of an LR
            schedule followed in samples).
        decisions: the decisions that changed the batch size or the LR, in order.
        last_decision: the last decision the policy returned (a kept batch included).
        last_statistics: the (all-reduced) statistics that decision read, for logging.
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
        lr_schedule_unit: str = "steps",
        beta2_rule: str = "fixed",
        weight_decay_rule: str = "fixed",
        lr_in_step: bool = False,
        local_steps: int | None = None,
    ) -> None:
        if not isinstance(policy, BatchSizePolicy):
            raise TypeError(
                f"policy must be a BatchSizePolicy (see adabatch.policies.POLICIES), got "
                f"{type(policy).__name__}"
            )
        sampler = _sampler_of(loader)
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}"
            )
        if lr_scheduler is not None and optimizer is None:
            raise ValueError("lr_scheduler needs the optimizer it drives (optimizer=...)")
        check_choice("lr_schedule_unit", lr_schedule_unit, LR_SCHEDULE_UNITS)
        if lr_schedule_unit == "samples":
            if lr_scheduler is None or lr_scheduler_interval != "step":
                raise ValueError(
                    "lr_schedule_unit='samples' follows a per-step LR scheduler in samples: "
                    "pass lr_scheduler=... with lr_scheduler_interval='step'"
                )
            check_sample_schedule(lr_scheduler, "BatchSizeScheduler")
        if optimizer is None and lr_rule != "none":
            raise ValueError(f"lr_rule={lr_rule!r} needs the optimizer (optimizer=...)")
        for name, rule in (("beta2_rule", beta2_rule), ("weight_decay_rule", weight_decay_rule)):
            if optimizer is None and rule != "fixed":
                raise ValueError(f"{name}={rule!r} needs the optimizer (optimizer=...)")
        if policy.cadence.unit == "step" and getattr(sampler, "resize_at", "batch") == "epoch":
            raise ValueError(
                f"the {policy.name} policy decides after optimizer steps, but the loader "
                "applies resizes only at epoch starts (resize_at='epoch'): the LR would change "
                "before the batch does; use resize_at='batch'"
            )
        self.local_steps = as_optional_int(local_steps, "local_steps", minimum=1)
        # Local SGD: the policy's sizes are per worker, the sampler's global (× the world).
        self._scale = int(getattr(sampler, "world_size", 1)) if self.local_steps else 1
        cadence = policy.cadence
        if (
            self.local_steps
            and cadence.window > 0
            and (cadence.unit != "step" or cadence.window > 1)
        ):
            raise ValueError(
                f"the {policy.name} policy measures {cadence.window} {cadence.unit}(s) per "
                "decision; under local SGD the statistics are those of each round's first "
                "step (all workers at the averaged parameters) and the decisions fall at the "
                "rounds: use a per-step test (norm-test, inner-product, noise-scale, ...) or "
                "a schedule"
            )
        # Local SGD: one worker's batch is bounded by its share of the data.
        policy = policy.bind(int(sampler.dataset_size) // self._scale)
        if sampler.batch_size != policy.batch_size * self._scale:
            if self.local_steps:
                raise ValueError(
                    f"the loader's global batch ({sampler.batch_size}) is not the policy's "
                    f"local batch ({policy.batch_size}) × the {self._scale} workers: build "
                    f"the loader with {policy.batch_size * self._scale}"
                )
            raise ValueError(
                f"the loader's batch size ({sampler.batch_size}) differs from the policy's "
                f"({policy.batch_size}); build the loader with policy.batch_size"
            )
        self.policy = policy
        self.loader = loader
        self.sampler = sampler
        self.optimizer = optimizer
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_schedule_unit = lr_schedule_unit
        if lr_in_step and lr_scheduler is not None:
            raise ValueError(
                "lr_in_step=True is for loops that step their own LR scheduler; do not also "
                "pass it as lr_scheduler"
            )
        self.lr_coupling: LRCoupling | StepScaledLR | None = None
        if optimizer is not None and lr_in_step:
            self.lr_coupling = StepScaledLR(
                optimizer, rule=lr_rule, base_batch_size=policy.batch_size
            )
            optimizer = self.lr_coupling.optimizer  # the torch optimizer inside a wrapper
        elif optimizer is not None:
            self.lr_coupling = LRCoupling(
                optimizer, rule=lr_rule, base_batch_size=policy.batch_size, scheduler=lr_scheduler
            )
        self.hparam_coupling = (
            None
            if optimizer is None or (beta2_rule, weight_decay_rule) == ("fixed", "fixed")
            else HyperparameterCoupling(
                optimizer,
                base_batch_size=policy.batch_size,
                beta2=beta2_rule,
                weight_decay=weight_decay_rule,
            )
        )
        self.step_count = 0
        self.epoch = 0
        self.samples = 0  # training samples consumed (global): the clock of sample schedules
        # The sum of the steps' requested sizes: the LR clock of lr_schedule_unit="samples"
        # (an epoch's short last batch counts in full, so at B = B₀ throughout the schedule
        # steps exactly once per step).
        self.nominal_samples = 0
        self._counted: Any = None  # the sampler's batch last counted into samples
        self._told: tuple[int, int] | None = None  # the batch `count` announced
        self.decisions: list[Decision] = []
        self.last_decision: Decision | None = None
        self._state = policy.init()
        self._window = StatsWindow()
        self.last_statistics: Any = None  # what the last decision read (all-reduced)
        self.round_start = 0  # local SGD: the step count at which the current round began
        self._warned = False
        # The policy is frozen: what it declares is read once, not on every step.
        self._cadence = policy.cadence
        self._request = policy.stats_request

    # ------------------------------------------------------------------ statistics
    @property
    def batch_size(self) -> int:
        """The batch size in force (the sampler's requested size)."""
        return self.sampler.batch_size

    @property
    def tracker_options(self) -> dict[str, bool]:
        """``inner_products`` / ``coordinates`` for the `GradStatsTracker` the policy needs."""
        return self._request.tracker_options()

    @property
    def state(self) -> Any:
        """The policy's state (what its `decide` returned last)."""
        return self._state

    @property
    def policy_batch_size(self) -> int:
        """The batch the policy sizes: the global one, or under local SGD one worker's."""
        return self.batch_size // self._scale

    @property
    def wants_stats(self) -> bool:
        """Whether the policy wants the statistics of the step about to be taken.

        Under local SGD: the first step of each round (every worker at the averaged
        parameters), below the cap.
        """
        cadence = self._cadence
        if not cadence.measuring(self.policy_batch_size, self.policy.cap):
            return False
        if self.local_steps:
            return self.step_count == self.round_start
        return cadence.measures(self.step_count if cadence.unit == "step" else self.epoch)

    @contextlib.contextmanager
    def measure(self, tracker: Any | None) -> Iterator[None]:
        """Run the step's forward/backward inside; statistics are taken if the policy wants.

        When it does, the tracker's statistics of the block are popped into the window;
        otherwise the block runs with the tracker paused, at the cost of a plain backward.
        ``tracker=None`` is allowed for policies that read no per-sample statistics (a
        constant batch, a schedule), which then need no hooks at all.
        """
        if tracker is None:
            if self._request.per_sample:
                raise ValueError(
                    f"the {self.policy.name} policy reads per-sample statistics: pass a "
                    "GradStatsTracker(model, **scheduler.tracker_options) to measure()"
                )
            yield
            return
        tracker.reset()  # passes from outside the block (e.g. evaluation) are not this step's
        if not (self.wants_stats and self._request.per_sample):
            with tracker.paused():
                yield
            return
        yield
        self.observe(tracker.pop())

    def observe(self, stats: GradStats | Any) -> None:
        """Feed this rank's statistics of the step about to be taken (or a `NoiseEstimate`).

        They are summed into the window of the next decision; the decision all-reduces the
        sum across ranks, so pass this rank's own statistics.
        """
        if self._cadence.window == 0:
            raise RuntimeError(f"the {self.policy.name!r} policy reads no statistics")
        self._window.add(stats)

    # ------------------------------------------------------------------ stepping
    def step(self, *lr_scheduler_args: Any) -> Decision | None:
        """Call after every optimizer step; returns the decision taken, if any.

        With ``lr_scheduler_interval="step"``, arguments go to the LR scheduler's ``step``.
        """
        return self._advance("step", lr_scheduler_args)

    def step_epoch(self, *lr_scheduler_args: Any) -> Decision | None:
        """Call after the last step of every epoch; returns the decision taken, if any.

        With ``lr_scheduler_interval="epoch"``, arguments go to the LR scheduler's ``step``
        (e.g. ``scheduler.step_epoch(val_loss)`` for ``ReduceLROnPlateau``).
        """
        return self._advance("epoch", lr_scheduler_args)

    def count(self, samples: int, requested: int) -> None:
        """Tell the scheduler the batch the coming `step` trained: its global samples and size.

        Needed only where the loader reads ahead of the step, so that the sampler's last
        delivered batch is not the one trained (the trainer integrations); by default `step`
        counts that last batch (or, in a loop that does not draw from the loader, the size
        in force).
        """
        self._told = (int(samples), int(requested))

    def _count_step(self) -> None:
        """Add the batch just trained to the clocks (real samples; requested sizes)."""
        if self._told is not None:
            samples, requested = self._told
            self._told = None
        else:
            last = self.sampler.last
            if last is not None and last is not self._counted:
                samples, requested = last.global_length, last.size
            else:
                samples = requested = self.batch_size
            self._counted = last
        self.samples += samples
        self.nominal_samples += requested

    def _advance(self, unit: str, lr_scheduler_args: tuple[Any, ...]) -> Decision | None:
        """The end of a step or an epoch: decide if it is a decision point, count, apply."""
        index = self.step_count if unit == "step" else self.epoch
        if unit == "step":
            self._count_step()
        decision = None
        at_cadence = self._cadence.unit == unit and self._cadence.decides_at(index)
        # Local SGD: a test reading statistics decides at the rounds (`end_round`); a
        # schedule reads none and decides on its own clock, the same on every worker.
        if at_cadence and (not self.local_steps or self._cadence.window == 0):
            decision = self._decide(step=index if unit == "step" else None)
        if unit == "step":
            self.step_count += 1
        else:
            self.epoch += 1
        self._apply(decision)
        coupling = self.lr_coupling
        if (
            self.lr_scheduler_interval == unit
            and isinstance(coupling, LRCoupling)
            and coupling.scheduler is not None
        ):
            if self.lr_schedule_unit == "samples":
                base = self.policy.batch_size * self._scale  # B₀, global
                place_schedule(coupling.scheduler, self.nominal_samples, base)
            coupling.scheduler_step(*lr_scheduler_args)
        return decision

    def end_round(self) -> Decision | None:
        """Local SGD: the decision at a synchronisation round (after the parameters agree).

        The window holds this worker's statistics of the round's first step; they are
        all-reduced (the pool of all workers' batches at the same parameters), the policy
        sizes the local batch, and the decision applies from the next step on every worker.
        """
        if not self.local_steps:
            raise RuntimeError("end_round is for local SGD: build the scheduler with local_steps")
        self.round_start = self.step_count
        if self._window.empty:  # nothing measured this round (at the cap): nothing to decide
            return None
        decision = self._decide(step=self.step_count - 1)
        self._apply(decision)
        return decision

    def _decide(self, *, step: int | None) -> Decision | None:
        stats = self._window.pop()
        if isinstance(stats, GradStats):
            stats = all_reduce_stats(stats)
        self.last_statistics = stats
        self._state, decision = self.policy.decide(
            self._state,
            stats,
            batch_size=self.policy_batch_size,
            step=step,
            epoch=self.epoch,
            samples=self.samples,
        )
        if is_distributed():  # one small collective per decision, not per step
            where = f"step {step}" if step is not None else f"the end of epoch {self.epoch + 1}"
            check_agreement(
                [
                    self.batch_size,
                    None if decision is None else decision.new_batch_size,
                    None if decision is None else decision.lr_factor,
                ],
                f"the batch-size decision at {where}",
                ("batch size in force", "new batch size", "LR factor"),
            )
        return decision

    def _apply(self, decision: Decision | None) -> None:
        if decision is None:
            return
        self.last_decision = decision
        if decision.note is not None and not self._warned:
            self._warned = True  # once per scheduler: the same cause repeats every step
            warnings.warn(decision.note, RuntimeWarning, stacklevel=3)
        if decision.changed:
            self.sampler.set_batch_size(decision.new_batch_size * self._scale)
        if self.lr_coupling is not None:
            self.lr_coupling.update(decision.new_batch_size, decision.lr_factor)
        if self.hparam_coupling is not None:
            factor = 1.0 if self.lr_coupling is None else self.lr_coupling.factor
            self.hparam_coupling.update(decision.new_batch_size, factor)
        if decision.changed or decision.lr_factor != 1.0:
            self.decisions.append(decision)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Policy (configuration and state), window, LR coupling, sampler, counters."""
        return {
            "version": _STATE_VERSION,
            "policy": self.policy.state_dict(),
            "policy_state": state_to_plain(self._state),
            "window": self._window.state_dict(),
            "lr": None if self.lr_coupling is None else self.lr_coupling.state_dict(),
            "hparams": None if self.hparam_coupling is None else self.hparam_coupling.state_dict(),
            "sampler": self.sampler.state_dict(),
            "step_count": self.step_count,
            "epoch": self.epoch,
            "samples": self.samples,
            "nominal_samples": self.nominal_samples,
            "local_steps": self.local_steps,
            "round_start": self.round_start,
            "decisions": [dataclasses.asdict(d) for d in self.decisions],
            "last_decision": None
            if self.last_decision is None
            else dataclasses.asdict(self.last_decision),
            "warned": self._warned,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict`: the run continues as if it had not stopped.

        Build the scheduler as the saved one was built (same policy configuration, a fresh
        loader), load the optimizer's own state first (this rewrites its LRs to the coupled
        values), then call this.
        """
        version = state.get("version")
        if version == 2 and (self.policy.reads_samples or self.lr_schedule_unit == "samples"):
            raise ValueError(
                "this checkpoint was written before the scheduler counted samples (state "
                f"version 2); the {self.policy.name} policy or lr_schedule_unit='samples' "
                "needs that count: start the run again"
            )
        if version not in (2, _STATE_VERSION):
            raise ValueError(
                f"BatchSizeScheduler state version {version!r} is not supported: this "
                f"adabatch reads versions 2 and {_STATE_VERSION} (states without a version were "
                "written by adabatch 0.1, whose policies held the batch size; resume such a "
                "run with adabatch 0.1, or start it again)"
            )
        if state.get("local_steps") != self.local_steps:
            raise ValueError(
                f"the checkpoint was written with local_steps={state.get('local_steps')}, "
                f"this scheduler has local_steps={self.local_steps}: build it the same way"
            )
        self.policy.check_state_dict(state["policy"])
        self._state = state_from_plain(self.policy.init(), state["policy_state"])
        self._window.load_state_dict(state["window"])
        self.round_start = int(state.get("round_start", 0))
        if self.lr_coupling is not None and state.get("lr") is not None:
            self.lr_coupling.load_state_dict(state["lr"])
        if self.hparam_coupling is not None and state.get("hparams") is not None:
            self.hparam_coupling.load_state_dict(state["hparams"])
        # Through the loader when there is one: it also ends a running iteration.
        getattr(self.loader, "load_state_dict", self.sampler.load_state_dict)(state["sampler"])
        self.step_count = int(state["step_count"])
        self.epoch = int(state["epoch"])
        self.samples = int(state.get("samples", 0))  # version 2: unused by this policy
        self.nominal_samples = int(state.get("nominal_samples", 0))
        self._told = None
        self._counted = self.sampler.last  # the restored last batch was counted already
        self.decisions = [Decision(**d) for d in state["decisions"]]
        last = state["last_decision"]
        self.last_decision = None if last is None else Decision(**last)
        self._warned = bool(state["warned"])

    def __repr__(self) -> str:
        return (
            f"BatchSizeScheduler({self.policy!r}, batch size {self.batch_size}, step "
            f"{self.step_count}, epoch {self.epoch}, lr rule "
            f"{None if self.lr_coupling is None else self.lr_coupling.rule!r})"
        )
