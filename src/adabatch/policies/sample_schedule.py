"""`SampleSchedulePolicy`: a fixed batch-size schedule on the samples (or tokens) consumed.

The schedules large-model pre-training ships (see `adabatch.policies.ramps`): thresholds in
samples or tokens (``"0:256 2M:512 8M:1024"``) or Megatron-LM's linear ramp
(``--rampup-batch-size <start> <increment> <ramp>``, up to ``max_batch_size``). The policy is
consulted after every optimizer step with the samples consumed so far (the step's batch
included) and sets the next step's batch to the schedule's value there, rounded to
``multiple_of`` and clamped to the bounds. It reads no statistics.

With ``unit="tokens"`` the clock is samples × ``tokens_per_sample`` (fixed-length sequences,
the usual packed pre-training data); thresholds and the ramp are then in tokens.

``integer_factors=True`` is OLMo-core's ``BatchSizeSchedulerCallback``: the sizes of a
threshold schedule must be integer multiples (or divisors) of each other, and an increase by
k waits until the batches taken at the current size are a multiple of k (OLMo-core's data
loader finds its position as batches processed × batch size, so it can change the size only
where that stays a whole number of new batches; our sampler has no such constraint, the
option reproduces theirs). Counting batches, not samples, keeps the rule reachable when an
epoch ends in a short batch. A decrease applies at once.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

from .._validate import as_optional_int, check_choice
from .base import BatchSizePolicy, Cadence, Decision
from .ramps import parse_megatron_rampup, parse_thresholds, ramp_batch_size, threshold_batch_size

__all__ = ["SampleSchedulePolicy"]

UNITS = ("samples", "tokens")


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class SampleSchedulePolicy(BatchSizePolicy):
    """A batch-size schedule in consumed samples or tokens: thresholds or Megatron's ramp.

    Args:
        batch_size: B₀; must be the schedule's batch at 0.
        thresholds: ``"<amount>:<batch> ..."`` (amounts with K/M/B/T suffixes), or a
            sequence of (amount, batch) pairs; the first amount is 0.
        rampup: Megatron's ``"<start> <increment> <ramp>"`` (start = B₀); the ramp ends at
            ``max_batch_size``, which must be given. Exactly one of thresholds and rampup.
        unit: "samples" or "tokens" (the amounts' unit).
        tokens_per_sample: tokens per sample, for ``unit="tokens"``.
        integer_factors: OLMo-core's rule (see the module docstring); thresholds only.
        min_batch_size, max_batch_size, multiple_of, dataset_size: see `BatchSizePolicy`.

    Example::

        SampleSchedulePolicy(batch_size=256, thresholds="0:256 50M:512 200M:1024",
                             unit="tokens", tokens_per_sample=1024)
        SampleSchedulePolicy(batch_size=32, rampup="32 32 1M", max_batch_size=1024)
    """

    name = "sample-schedule"

    thresholds: str | Sequence[tuple[int, int]] | None = None
    rampup: str | Sequence[int] | None = None
    unit: str = "samples"
    tokens_per_sample: int | None = None
    integer_factors: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        unit = check_choice("unit", self.unit, UNITS)
        per_sample = as_optional_int(self.tokens_per_sample, "tokens_per_sample", minimum=1)
        if unit == "tokens" and per_sample is None:
            raise ValueError("unit='tokens' needs tokens_per_sample (the sequence length)")
        if unit == "samples" and per_sample is not None:
            raise ValueError("tokens_per_sample applies to unit='tokens' only")
        if (self.thresholds is None) == (self.rampup is None):
            raise ValueError("give exactly one of thresholds='0:B0 ...' and rampup='start inc n'")
        thresholds = rampup = None
        if self.thresholds is not None:
            pairs = parse_thresholds(self.thresholds)
            if pairs[0][1] != self.batch_size:
                raise ValueError(
                    f"the schedule starts at batch {pairs[0][1]} but batch_size is "
                    f"{self.batch_size}: make them equal"
                )
            if self.integer_factors:
                sizes = [b for _, b in pairs]
                for a, b in itertools.pairwise(sizes):
                    if max(a, b) % min(a, b):
                        raise ValueError(
                            f"integer_factors=True: {a} -> {b} is not a change by an integer "
                            "factor (OLMo-core's schedules multiply or divide the batch)"
                        )
            # Canonical text: the configuration survives a JSON round trip unchanged.
            thresholds = " ".join(f"{a}:{b}" for a, b in pairs)
        else:
            start, increment, ramp = parse_megatron_rampup(self.rampup)  # type: ignore[arg-type]
            if start != self.batch_size:
                raise ValueError(
                    f"the ramp starts at {start} but batch_size is {self.batch_size}: make them "
                    "equal"
                )
            if self.max_batch_size is None:
                raise ValueError("rampup ramps up to max_batch_size: give max_batch_size")
            if self.integer_factors:
                raise ValueError("integer_factors applies to a threshold schedule, not a ramp")
            ramp_batch_size(
                0, start=start, increment=increment, ramp=ramp, final=self.max_batch_size
            )
            rampup = f"{start} {increment} {ramp}"
        for key, value in (
            ("unit", unit),
            ("tokens_per_sample", per_sample),
            ("integer_factors", bool(self.integer_factors)),
            ("thresholds", thresholds),
            ("rampup", rampup),
        ):
            object.__setattr__(self, key, value)

    #: Its decisions read the sample clock (`BatchSizeScheduler.samples`).
    reads_samples: ClassVar[bool] = True

    @property
    def cadence(self) -> Cadence:
        """After every optimizer step; no statistics."""
        return Cadence("step")

    def init(self) -> int:
        """Batches taken at the current size (OLMo-core's divisibility rule counts them)."""
        return 0

    @functools.cached_property
    def _schedule(self) -> Any:
        if self.thresholds is not None:
            return parse_thresholds(self.thresholds)
        return parse_megatron_rampup(self.rampup)  # type: ignore[arg-type]

    def target(self, samples: int) -> int:
        """The schedule's batch after ``samples`` consumed samples (before rounding)."""
        amount = samples * (self.tokens_per_sample or 1)
        if self.thresholds is not None:
            return threshold_batch_size(self._schedule, amount)
        start, increment, ramp = self._schedule
        assert self.max_batch_size is not None
        return ramp_batch_size(
            amount, start=start, increment=increment, ramp=ramp, final=self.max_batch_size
        )

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
        taken = int(state) + 1  # batches at the current size, this one included
        target = self.target(samples)
        new = self.clamp(target)
        if new == batch_size:
            return taken, None
        if self.integer_factors and new > batch_size and taken % (new // batch_size):
            return taken, None  # OLMo-core: not yet a whole number of new batches
        return 0, Decision(
            step=step,
            epoch=epoch,
            old_batch_size=batch_size,
            new_batch_size=new,
            statistic=self.unit,
            value=float(samples * (self.tokens_per_sample or 1)),
            suggested=float(target),
        )
