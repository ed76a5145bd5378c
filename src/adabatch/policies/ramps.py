"""Batch-size schedules in samples or tokens: thresholds and Megatron's linear ramp (pure).

Large-model pre-training ships fixed ramps measured in consumed samples or tokens rather than
epochs. Two forms, as pure functions of the amount consumed c:

**Thresholds** — ``"0:768 250B:1536"``: from c = 0 the batch is 768, from c = 250·10⁹ it is
1536. Amounts take the suffixes K, M, B (or G) and T (10³, 10⁶, 10⁹, 10¹²); the first
threshold must be 0 and thresholds must increase. The batch at c is that of the last
threshold ≤ c, so a step that crosses several thresholds lands on the last one.

**Megatron-LM's ramp** (``--rampup-batch-size <start> <increment> <ramp>``): n = (B − start) /
increment increments spread evenly over ``ramp`` samples,

    B(c) = start + ⌊c / (ramp/n)⌋ · increment   for c ≤ ramp,   B otherwise,

(Megatron requires B − start to be a multiple of the increment, and so do we.)

When a change applies: the batch of a step is the schedule's value at the amount consumed
*before* that step — Megatron sizes the step that starts at c consumed samples by B(c). A
policy deciding after a step, with c counting that step's batch, sets the next step's batch to
B(c): the same thing.
"""

from __future__ import annotations

import decimal
import itertools
import re
from collections.abc import Sequence

from .._validate import as_int

__all__ = [
    "parse_amount",
    "parse_megatron_rampup",
    "parse_thresholds",
    "ramp_batch_size",
    "threshold_batch_size",
]

_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_amount(text: str) -> int:
    """``"250B"`` → 250·10⁹; ``"1.5M"`` → 1 500 000; a plain integer as is.

    Example:
        >>> parse_amount("250B"), parse_amount("1.5m"), parse_amount("768")
        (250000000000, 1500000, 768)
    """
    match = _AMOUNT.match(str(text))
    if match is None:
        raise ValueError(
            f"cannot read the amount {text!r}: write a number with an optional suffix K, M, "
            "B (or G) or T, e.g. 250B or 1.5M"
        )
    number, suffix = match.groups()
    value = decimal.Decimal(number) * _SUFFIXES[suffix.upper()]  # exact: 2.01K is 2010
    if value != value.to_integral_value():
        raise ValueError(f"the amount {text!r} is not a whole number of samples or tokens")
    return int(value)


def parse_thresholds(text: str | Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``"0:768 250B:1536"`` (spaces or commas between entries) → ((0, 768), (250·10⁹, 1536)).

    A sequence of (threshold, batch size) pairs is checked and returned as a tuple.

    Example:
        >>> parse_thresholds("0:768, 250B:1536")
        ((0, 768), (250000000000, 1536))
    """
    if isinstance(text, str):
        pairs = []
        for entry in filter(None, re.split(r"[\s,]+", text.strip())):
            if entry.count(":") != 1:
                raise ValueError(
                    f"schedule entry {entry!r} is not <amount>:<batch size>, e.g. 250B:1536"
                )
            amount, size = entry.split(":")
            if not size.strip().isdigit():
                raise ValueError(f"schedule entry {entry!r}: the batch size must be an integer")
            pairs.append((parse_amount(amount), as_int(int(size), "batch size", minimum=1)))
    else:
        pairs = [(as_int(a, "threshold", minimum=0), as_int(b, "batch size", minimum=1))
                 for a, b in text]  # fmt: skip
    if not pairs:
        raise ValueError("the schedule is empty: give at least '0:<batch size>'")
    if pairs[0][0] != 0:
        raise ValueError(
            f"the schedule's first threshold must be 0 (the batch to start with), got {pairs[0][0]}"
        )
    thresholds = [a for a, _ in pairs]
    if any(b <= a for a, b in itertools.pairwise(thresholds)):
        raise ValueError(f"the schedule's thresholds must increase, got {thresholds}")
    return tuple(pairs)


def threshold_batch_size(schedule: Sequence[tuple[int, int]], consumed: int) -> int:
    """The batch of the last threshold ≤ ``consumed``.

    Example:
        >>> threshold_batch_size(((0, 768), (1000, 1536), (2000, 3072)), 2500)
        3072
    """
    consumed = as_int(consumed, "consumed", minimum=0)
    size = schedule[0][1]
    for threshold, batch in schedule:
        if threshold > consumed:
            break
        size = batch
    return size


def ramp_batch_size(consumed: int, *, start: int, increment: int, ramp: int, final: int) -> int:
    """Megatron's ramp: start + ⌊c/(ramp/n)⌋·increment up to ``ramp`` samples, then ``final``.

    Example:
        >>> [ramp_batch_size(c, start=32, increment=32, ramp=300, final=128) for c in
        ...  (0, 99, 100, 250, 300, 301)]
        [32, 32, 64, 96, 128, 128]
    """
    consumed = as_int(consumed, "consumed", minimum=0)
    start = as_int(start, "start", minimum=1)
    increment = as_int(increment, "increment", minimum=1)
    ramp = as_int(ramp, "ramp", minimum=0)
    final = as_int(final, "final", minimum=start)
    span = final - start
    if span % increment:
        raise ValueError(
            f"the ramp from {start} to {final} is not a whole number of increments of "
            f"{increment} (Megatron requires (final - start) % increment == 0)"
        )
    increments = span // increment
    if consumed > ramp or increments == 0 or ramp == 0:
        return final  # (a ramp of 0 samples: the final batch from the first decision on)
    per_increment = ramp / increments
    return start + int(consumed / per_increment) * increment


def parse_megatron_rampup(text: str | Sequence[int]) -> tuple[int, int, int]:
    """``--rampup-batch-size`` as Megatron takes it: ``"<start> <increment> <ramp samples>"``.

    Example:
        >>> parse_megatron_rampup("32 32 1.5M")
        (32, 32, 1500000)
    """
    parts = text.split() if isinstance(text, str) else list(text)
    if len(parts) != 3:
        raise ValueError(
            f"--rampup-batch-size takes three values <start> <increment> <ramp samples>, got "
            f"{text!r}"
        )
    start = as_int(parse_amount(str(parts[0])), "start", minimum=1)
    increment = as_int(parse_amount(str(parts[1])), "increment", minimum=1)
    return start, increment, parse_amount(str(parts[2]))
