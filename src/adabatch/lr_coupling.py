"""Learning-rate coupling: the LR the optimizer uses when the batch size changes.

The LR in force is

    lr = lr_sched(t) · rule(B / B₀) · Π f_k

* ``lr_sched(t)``: what the user's own LR scheduler (if any) sets, computed as if the batch
  never changed;
* ``rule``: ``none`` (1), ``linear`` (B/B₀; Goyal et al. 2017, for SGD) or ``sqrt``
  (√(B/B₀); Krizhevsky 2014, Hoffer et al. 2017, for adaptive optimizers);
* ``f_k``: the persistent factors of the policy's decisions — a schedule's ``lr_factor``
  (Devarakonda et al.'s gamma, Smith et al.'s fallback). (DiveBatch's "rescale the LR by
  B'/B at each resize" multiplies to B_t/B₀: it is the ``linear`` rule.)

NOTE [composing with a scheduler]. `LRCoupling` never patches the optimizer or the scheduler.
It remembers, per parameter group, the *unscaled* LR, and writes lr = unscaled × factor into
``param_groups``. Torch schedulers come in two kinds: closed-form ones (``LambdaLR``,
``OneCycleLR``, ``CyclicLR``) compute the LR from the step count alone and overwrite
``param_groups``, while chainable ones (``StepLR``, ``MultiStepLR``, ``ExponentialLR``,
``CosineAnnealingLR``, ``LinearLR``, ``ReduceLROnPlateau``) transform the LR they find there.
Neither may see our scaled LR: a closed-form one would erase the factor, and a chainable one
that is not purely multiplicative (cosine with ``eta_min > 0``) would mix it into its
recursion. So step the scheduler *through* the coupling — `scheduler_step` writes the
unscaled LRs back, steps the scheduler, reads its new unscaled LRs and reapplies the factor —
which is exact for both kinds. ``scheduler.get_last_lr()`` then reports the unscaled LR; the
LR in force is in ``optimizer.param_groups`` (and `LRCoupling.lrs`).

Warm-up is a scheduler like any other (e.g. ``LinearLR`` from a small factor): it ramps the
unscaled LR and the coupling multiplies the ramp, so the warm-up ends at
lr_sched · rule(B/B₀). A batch that grows during warm-up raises the target of the ramp from
that step on — as Goyal et al.'s gradual warm-up to the large-batch LR does.

An LR set by hand in ``param_groups`` between two calls is taken as a new *scaled* LR: the
coupling divides its factor out to recover the unscaled one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._validate import as_int, check_choice, check_positive

__all__ = [
    "LR_RULES",
    "LR_SCHEDULE_UNITS",
    "LRCoupling",
    "StepScaledLR",
    "check_sample_schedule",
    "lr_scale",
    "place_schedule",
]

LR_SCHEDULE_UNITS = ("steps", "samples")


def _none(ratio: float) -> float:
    return 1.0


def _sqrt(ratio: float) -> float:
    return math.sqrt(ratio)


def _linear(ratio: float) -> float:
    return ratio


LR_RULES: Mapping[str, Callable[[float], float]] = {
    "none": _none,
    "linear": _linear,
    "sqrt": _sqrt,
}


def lr_scale(rule: str, batch_size: int, base_batch_size: int) -> float:
    """rule(B/B₀): 1, B/B₀ or √(B/B₀).

    Example:
        >>> lr_scale("sqrt", 512, 128)
        2.0
    """
    check_choice("lr rule", rule, tuple(LR_RULES))
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    base_batch_size = as_int(base_batch_size, "base_batch_size", minimum=1)
    return LR_RULES[rule](batch_size / base_batch_size)


def _check_float_lrs(optimizer: torch.optim.Optimizer) -> None:
    for i, group in enumerate(optimizer.param_groups):
        if isinstance(group["lr"], torch.Tensor):
            raise TypeError(
                f"param group {i} has a tensor LR; the LR coupling rescales float LRs only "
                "(build the optimizer with lr=<float>)"
            )


class _CouplingFactor:
    """rule(B/B₀) · Π f_k: the factor both couplings apply, and its checkpointed part."""

    def __init__(self, rule: str, base_batch_size: int) -> None:
        self.rule = check_choice("lr rule", rule, tuple(LR_RULES))
        self.base_batch_size = as_int(base_batch_size, "base_batch_size", minimum=1)
        self.decision_factor = 1.0
        self._factor = 1.0  # as of the last update (B = B₀ until one)

    @property
    def factor(self) -> float:
        """rule(B/B₀) · Π f_k, the factor in force (B: the batch size of the last update)."""
        return self._factor

    def _set_factor(self, batch_size: int, lr_factor: float) -> None:
        ratio = as_int(batch_size, "batch_size", minimum=1) / self.base_batch_size
        self.decision_factor *= check_positive("lr_factor", lr_factor)
        self._factor = LR_RULES[self.rule](ratio) * self.decision_factor

    def _factor_state(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "base_batch_size": self.base_batch_size,
            "factor": self._factor,
            "decision_factor": self.decision_factor,
        }

    def _load_factor_state(self, state: Mapping[str, Any]) -> None:
        if state["rule"] != self.rule or state["base_batch_size"] != self.base_batch_size:
            raise ValueError(
                f"the LR state is for rule {state['rule']!r} with B0={state['base_batch_size']}, "
                f"this coupling uses rule {self.rule!r} with B0={self.base_batch_size}"
            )
        self._factor = float(state["factor"])
        self.decision_factor = float(state["decision_factor"])


class LRCoupling(_CouplingFactor):
    """Applies lr = lr_sched · rule(B/B₀) · Π f_k to an optimizer's parameter groups.

    Args:
        optimizer: any ``torch.optim.Optimizer`` with float LRs.
        rule: "none", "linear" or "sqrt".
        base_batch_size: B₀, the batch size the optimizer's current LRs are meant for.
        scheduler: the user's LR scheduler, stepped through `scheduler_step` (optional).

    Example::

        coupling = LRCoupling(optimizer, rule="linear", base_batch_size=128,
                              scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 30))
        ...
        coupling.scheduler_step()          # instead of scheduler.step()
        coupling.update(batch_size=256)    # after the batch grew: lr doubles
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        rule: str = "none",
        base_batch_size: int,
        scheduler: Any | None = None,
    ) -> None:
        super().__init__(rule, base_batch_size)
        self.optimizer = optimizer
        self.scheduler = scheduler
        _check_float_lrs(optimizer)
        self._unscaled = [float(g["lr"]) for g in optimizer.param_groups]
        self._written = list(self._unscaled)

    @property
    def lrs(self) -> list[float]:
        """The LRs in force, one per parameter group."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    @property
    def unscaled_lrs(self) -> list[float]:
        """The scheduler's LRs, before the factor."""
        self._absorb_external_changes()
        return list(self._unscaled)

    def update(self, batch_size: int, lr_factor: float = 1.0) -> None:
        """Rescale for the batch size now in force, multiplying in a decision's factor."""
        self._absorb_external_changes()
        self._set_factor(batch_size, lr_factor)
        self._write()

    def scheduler_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the scheduler on the unscaled LRs, then reapply the factor in force.

        Arguments go to ``scheduler.step`` (e.g. the metric of ``ReduceLROnPlateau``).
        """
        if self.scheduler is None:
            raise RuntimeError("this LRCoupling has no scheduler; pass scheduler=... to it")
        self._absorb_external_changes()
        for group, lr in zip(self.optimizer.param_groups, self._unscaled, strict=True):
            group["lr"] = lr
        try:
            self.scheduler.step(*args, **kwargs)
            self._unscaled = [float(g["lr"]) for g in self.optimizer.param_groups]
        finally:
            self._write()  # also when the scheduler raised: the scaled LRs are back

    def _absorb_external_changes(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self._unscaled):
            raise RuntimeError(
                f"the optimizer has {len(groups)} parameter groups, the coupling was built "
                f"for {len(self._unscaled)}; build a new LRCoupling after add_param_group"
            )
        factor = self.factor
        for i, group in enumerate(groups):
            if float(group["lr"]) != self._written[i]:  # set by hand: a new scaled LR
                self._unscaled[i] = float(group["lr"]) / factor

    def _write(self) -> None:
        factor = self.factor
        self._written = []
        for group, lr in zip(self.optimizer.param_groups, self._unscaled, strict=True):
            group["lr"] = lr * factor
            self._written.append(group["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Rule, B₀, the factors, the unscaled LRs (and the scheduler's state)."""
        self._absorb_external_changes()
        return {
            **self._factor_state(),
            "unscaled": list(self._unscaled),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` and rewrite the scaled LRs into the optimizer."""
        if len(state["unscaled"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict has {len(state['unscaled'])} parameter groups, the optimizer "
                f"{len(self.optimizer.param_groups)}"
            )
        self._load_factor_state(state)
        self._unscaled = [float(x) for x in state["unscaled"]]
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._write()


def check_sample_schedule(scheduler: Any, where: str) -> None:
    """Refuse an LR scheduler that cannot be followed in samples (see `place_schedule`)."""
    closed_form = (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.OneCycleLR)
    if not isinstance(scheduler, closed_form):
        raise ValueError(
            f"{where}: lr_schedule_unit='samples' moves the LR schedule by samples / B0, which "
            "needs a schedule that is a function of its step count (LambdaLR, OneCycleLR, "
            f"every transformers schedule); got {type(scheduler).__name__}: pass "
            "lr_schedule_unit='steps' to step it once per optimizer step"
        )


def place_schedule(scheduler: Any, samples: int, base_batch_size: int) -> None:
    """Set a closed-form LR scheduler's count so that its next ``step()`` lands on ⌊samples/B₀⌋.

    A schedule planned in optimizer steps at B₀ (warm-up, a decay to zero, a OneCycle) is then
    followed in samples: a step of a batch k·B₀ advances it by k, and it ends when the planned
    number of samples is trained — not k times later, as when it is stepped once per (larger)
    step. With B = B₀ throughout it is stepped exactly as usual.
    """
    scheduler.last_epoch = samples // base_batch_size - 1


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The ``torch.optim.Optimizer`` inside a framework's wrapper (accelerate, Lightning)."""
    inner = optimizer
    for _ in range(8):
        # Wrappers keep the optimizer they wrap as ``.optimizer``; some (accelerate's) also
        # subclass Optimizer without being one, so look inside first.
        wrapped = getattr(inner, "optimizer", None)
        if wrapped is not None and wrapped is not inner:
            inner = wrapped
        elif isinstance(inner, torch.optim.Optimizer):
            return inner
        else:
            break
    raise TypeError(
        f"expected a torch.optim.Optimizer (or a wrapper with .optimizer), got "
        f"{type(optimizer).__name__}"
    )


class StepScaledLR(_CouplingFactor):
    """The same coupling, applied only while ``optimizer.step()`` runs.

    lr = lr_sched · rule(B/B₀) · Π f_k, like `LRCoupling`, but the factor is written into
    ``param_groups`` by an optimizer *step pre-hook* and taken out again by a *step post-hook*
    (``torch.optim.Optimizer.register_step_pre_hook`` / ``register_step_post_hook``). Between
    two steps the groups hold the unscaled LRs, so whatever steps the LR scheduler — a
    trainer's loop (Lightning, Hugging Face), at any point of its step — sees its own values,
    closed-form and chainable schedulers alike, with nothing stepped through us. This is the
    coupling for loops we do not own; `LRCoupling` is the one for our own loop.

    Args:
        optimizer: a torch optimizer, or a wrapper holding it as ``.optimizer``.
        rule: "none", "linear" or "sqrt".
        base_batch_size: B₀.

    A step skipped by a mixed-precision gradient scaler never calls ``step()``: nothing is
    scaled then. `remove` detaches the hooks.
    """

    def __init__(self, optimizer: Any, *, rule: str = "none", base_batch_size: int) -> None:
        super().__init__(rule, base_batch_size)
        self.optimizer = _torch_optimizer(optimizer)
        _check_float_lrs(self.optimizer)
        self._saved: list[float] | None = None  # the unscaled LRs while a step runs
        self._handles = [
            self.optimizer.register_step_pre_hook(self._scale),
            self.optimizer.register_step_post_hook(self._unscale),
        ]

    @property
    def lrs(self) -> list[float]:
        """The LRs the next step uses (the groups' LRs times the factor)."""
        return [float(g["lr"]) * self._factor for g in self.optimizer.param_groups]

    def update(self, batch_size: int, lr_factor: float = 1.0) -> None:
        """Set the factor for the batch size now in force, multiplying in a decision's factor."""
        self._set_factor(batch_size, lr_factor)

    def _scale(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        groups = self.optimizer.param_groups
        self._saved = [float(g["lr"]) for g in groups]
        if self._factor != 1.0:
            for group, lr in zip(groups, self._saved, strict=True):
                group["lr"] = lr * self._factor

    def _unscale(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._saved is not None:
            for group, lr in zip(self.optimizer.param_groups, self._saved, strict=True):
                group["lr"] = lr
            self._saved = None

    def remove(self) -> None:
        """Detach the step hooks (the groups keep their unscaled LRs)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def state_dict(self) -> dict[str, Any]:
        """Rule, B₀ and the factors (the LRs themselves are the optimizer's and scheduler's)."""
        return self._factor_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output (same rule and B₀)."""
        self._load_factor_state(state)
