"""Seesaw (Meterez et al. 2025): where the LR schedule would cut the LR by α, grow the batch.

Seesaw turns a decaying LR schedule into a batch-size schedule: each time the schedule has cut
the LR by a factor α (< 1) more, the LR is cut by √α only and the batch is multiplied by 1/α.
For Adam-type optimizers the two keep the same noise level (the LR over √B), and the larger
batch takes fewer, more parallel steps — the paper reports ≈36 % less wall-clock at equal loss.

In adabatch that is three existing pieces, nothing more:

* the **milestones**: the k-th is the first step t (counted at B₀) where the schedule's LR has
  fallen to α^k of its peak (after a warm-up, if any) — `seesaw_thresholds`, on the LR curve
  of any torch scheduler (`lr_curve`: step, cosine, warm-up-stable-decay, ...), in samples
  t·B₀, with the batch B₀·α^(−k) from there (capped at ``max_batch_size``);
* the **LR schedule followed in samples** (``lr_schedule_unit="samples"``), so that the base
  schedule keeps its shape in samples although steps become larger;
* the **square-root LR rule** (``lr_rule="sqrt"``): lr = sched(samples/B₀)·√(B/B₀), which at
  the k-th milestone is sched·α^(−k/2) — the schedule's cut α^k, of which the batch took
  α^(k/2). At the cap the batch stops growing and the rule stops compensating: the schedule's
  own cuts then apply in full, as the paper prescribes when the batch cannot grow.

`seesaw_policy` builds the `SampleSchedulePolicy`; run it with ``lr_rule="sqrt"`` and
``lr_schedule_unit="samples"`` (``BatchSizeScheduler`` or the integrations; the experiments'
LR schedules step per epoch, so the CLI does not run Seesaw yet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._validate import as_int, as_optional_int
from .sample_schedule import SampleSchedulePolicy

__all__ = ["SeesawPolicy", "lr_curve", "seesaw_policy", "seesaw_thresholds"]


def lr_curve(make_scheduler: Callable[[torch.optim.Optimizer], Any], steps: int) -> list[float]:
    """The LR a scheduler sets at steps 0 … ``steps`` − 1, for an initial LR of 1.

    ``make_scheduler(optimizer)`` builds the scheduler on a throw-away optimizer (e.g.
    ``lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=1000)``).
    """
    steps = as_int(steps, "steps", minimum=1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer)
    curve = []
    for _ in range(steps):
        curve.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    return curve


def seesaw_thresholds(
    lrs: Sequence[float], alpha: float, base_batch_size: int, max_batch_size: int | None = None
) -> tuple[tuple[int, int], ...]:
    """Seesaw's (samples, batch) schedule from an LR curve indexed by steps at B₀.

    The k-th milestone is the first step t after the schedule's peak (the end of a warm-up)
    with lrs[t] ≤ α^k · max(lrs) (a relative tolerance of 10⁻⁹ absorbs the rounding of
    multiplicative schedules); from t·B₀ samples on the batch
    is round(B₀·α^(−k)), capped at ``max_batch_size`` (milestones past the cap are dropped:
    the batch cannot grow there).

    Example:
        >>> halve = [1.0] * 10 + [0.5] * 10 + [0.25] * 10     # a step schedule
        >>> seesaw_thresholds(halve, 0.5, 32)
        ((0, 32), (320, 64), (640, 128))
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1): the LR cut Seesaw trades, got {alpha}")
    base = as_int(base_batch_size, "base_batch_size", minimum=1)
    cap = as_optional_int(max_batch_size, "max_batch_size", minimum=base)
    if not lrs or not max(lrs) > 0:
        raise ValueError("the LR curve must be non-empty and rise above 0")
    # The cuts count from the schedule's peak: a warm-up's rise is not a cut to trade.
    peak = max(range(len(lrs)), key=lambda t: lrs[t])
    top = lrs[peak]
    thresholds = [(0, base)]
    k = 1
    for t in range(peak, len(lrs)):
        lr = lrs[t]
        while lr <= alpha**k * top * (1 + 1e-9):
            size = round(base * alpha ** (-k))
            if cap is not None and size > cap:
                return tuple(thresholds)
            if thresholds[-1][0] == t * base:  # several cuts at one step: the last one
                thresholds[-1] = (t * base, max(size, thresholds[-1][1]))
            elif size > thresholds[-1][1]:
                thresholds.append((t * base, size))
            k += 1
            if k > 64:  # the LR fell to (or below) 0: nothing is left to trade
                return tuple(thresholds)
    return tuple(thresholds)


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class SeesawPolicy(SampleSchedulePolicy):
    """Seesaw's batch schedule: a `SampleSchedulePolicy` whose thresholds come from an LR curve.

    Build it with `seesaw_policy` (from an LR curve), or in an experiment with a per-step
    schedule (``schedule.interval=step``), which fills ``thresholds`` from the run's own
    schedule. Run it with ``lr_rule="sqrt"`` and the LR schedule followed in samples.

    Args:
        alpha: the LR cut traded for batch growth at each milestone (0.5: halvings).
        thresholds: the milestones (derived; see `seesaw_thresholds`).
    """

    name = "seesaw"

    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1): the LR cut Seesaw trades, got {self.alpha}")
        if self.thresholds is None:
            raise ValueError(
                "the seesaw policy's milestones come from the LR schedule: build it with "
                "adabatch.policies.seesaw_policy(lr_curve, ...), or in an experiment with "
                "schedule.interval=step (which derives them)"
            )
        super().__post_init__()


def seesaw_policy(
    lrs: Sequence[float],
    *,
    alpha: float = 0.5,
    batch_size: int,
    max_batch_size: int | None = None,
    **bounds: Any,
) -> SeesawPolicy:
    """The `SeesawPolicy` of an LR curve (run it with lr_rule='sqrt').

    Example::

        def cosine(o):   # closed form: lr_schedule_unit="samples" needs LambdaLR/OneCycleLR
            return LambdaLR(o, lambda t: 0.5 * (1 + math.cos(math.pi * t / total_steps)))

        policy = seesaw_policy(lr_curve(cosine, total_steps), alpha=0.5, batch_size=64,
                               max_batch_size=1024)
        scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt",
                                       lr_scheduler=cosine(optimizer),
                                       lr_scheduler_interval="step", lr_schedule_unit="samples")
    """
    pairs = seesaw_thresholds(lrs, alpha, batch_size, max_batch_size)
    text = " ".join(f"{a}:{b}" for a, b in pairs)
    return SeesawPolicy(
        batch_size=batch_size,
        thresholds=text,
        alpha=alpha,
        max_batch_size=max_batch_size,
        **bounds,
    )
