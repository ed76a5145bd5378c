"""Fixed batch-size schedules: Devarakonda et al.'s AdaBatch and Smith et al.'s hybrid.

**AdaBatch** (Devarakonda, Naumov & Garland, arXiv 1712.02029; NVlabs/AdaBatch): every R
epochs the batch is multiplied by a factor, B ← ⌊B·factor⌋ (capped), and the learning rate by
``lr_factor`` (their ``gamma``). Their CIFAR runs double the batch every 20 epochs.

**Increase the batch instead of decaying the LR** (Smith, Kindermans, Ying & Le, ICLR 2018):
a step LR schedule that divides the LR by k at given epochs becomes one that multiplies the
batch by k there, which keeps the SGD noise scale ε·N/B on the same path. At the cap the
batch can only grow by r < k, and the rest of the reduction falls back to the LR: it is
multiplied by r/k, so that ε·N/B still drops by k (``lr_fallback=True``).

The schedule reads no statistics. Decisions happen at the end of epoch e when e + 1 is a
multiple of ``every`` (or is one of ``milestones``), so that a torch ``MultiStepLR`` with the
same milestones and this policy change at the same epoch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .._validate import as_int, check_positive
from .base import BatchSizePolicy, Decision

__all__ = ["SchedulePolicy", "scheduled_size"]


def scheduled_size(batch_size: int, factor: float, max_batch_size: float) -> int:
    """⌊B·factor⌋ capped at ``max_batch_size`` (at least B: a schedule never shrinks)."""
    return int(min(max(math.floor(batch_size * factor), batch_size), max_batch_size))


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class SchedulePolicy(BatchSizePolicy):
    """Multiply the batch by ``factor`` at fixed epochs.

    Args:
        batch_size: B₀.
        factor: the batch multiplier at each scheduled epoch (> 1; AdaBatch 2, Smith 5).
        every: resize after every ``every`` epochs (AdaBatch's ``resize_freq``; default 20
            when no milestones are given).
        milestones: resize at these epochs instead (Smith: the LR schedule's milestones).
        lr_factor: multiply the LR by this at each scheduled epoch (AdaBatch's ``gamma``;
            1 leaves it). Not combinable with ``lr_fallback``.
        lr_fallback: Smith's hybrid: multiply the LR by r/factor, where r is the growth the
            cap allowed (1 while the batch can grow by the full factor).
        min_batch_size, max_batch_size, multiple_of, dataset_size: see `BatchSizePolicy`.

    Example::

        SchedulePolicy(128, factor=2, every=20, max_batch_size=2048)        # AdaBatch
        SchedulePolicy(128, factor=5, milestones=[60, 120, 160],
                       lr_fallback=True, max_batch_size=5120)               # Smith et al.
    """

    name = "schedule"

    factor: float = 2.0
    every: int | None = None
    milestones: Sequence[int] | None = None
    lr_factor: float = 1.0
    lr_fallback: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        factor = check_positive("factor", self.factor)
        if factor < 1:
            raise ValueError(f"factor must be >= 1 (a schedule grows the batch), got {factor}")
        every, milestones = self.every, self.milestones
        if every is not None and milestones is not None:
            raise ValueError("give either every=R or milestones=[...], not both")
        if milestones is None:
            every = as_int(20 if every is None else every, "every", minimum=1)
        else:
            if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
                raise TypeError(f"milestones must be a list of epochs, got {milestones!r}")
            milestones = tuple(as_int(m, "milestone", minimum=1) for m in milestones)
            if list(milestones) != sorted(set(milestones)):
                raise ValueError(f"milestones must be strictly increasing, got {list(milestones)}")
        lr_factor = check_positive("lr_factor", self.lr_factor)
        if self.lr_fallback and lr_factor != 1.0:
            raise ValueError(
                "lr_fallback=True derives the LR factor from the capped growth; leave "
                f"lr_factor at 1 (got {lr_factor})"
            )
        for key, value in (
            ("factor", factor),
            ("every", every),
            ("milestones", milestones),
            ("lr_factor", lr_factor),
            ("lr_fallback", bool(self.lr_fallback)),
        ):
            object.__setattr__(self, key, value)

    def is_scheduled(self, epoch: int) -> bool:
        """Whether the schedule acts at the end of epoch ``epoch`` (0-based)."""
        if self.milestones is not None:
            return epoch + 1 in self.milestones
        assert self.every is not None
        return (epoch + 1) % self.every == 0

    def decide(  # noqa: D102 - see BatchSizePolicy.decide
        self,
        state: Any,
        stats: Any,
        *,
        batch_size: int,
        step: int | None,
        epoch: int,
        samples: int = 0,
    ) -> tuple[Any, Decision | None]:
        if not self.is_scheduled(epoch):
            return state, None
        target = scheduled_size(batch_size, self.factor, self.cap)
        new = self.clamp(target) if target > batch_size else batch_size
        # Smith's fallback: the LR takes the part of the factor the capped batch could not
        # (never above 1: rounding up to multiple_of may grow the batch past the factor).
        lr_factor = (
            min(1.0, (new / batch_size) / self.factor) if self.lr_fallback else self.lr_factor
        )
        return state, Decision(
            step=None,
            epoch=epoch,
            old_batch_size=batch_size,
            new_batch_size=new,
            statistic="epoch",
            value=float(epoch),
            suggested=batch_size * self.factor,
            lr_factor=lr_factor,
        )
