"""Curves over seeds from saved runs: a value per evaluation point (or bin), mean ± SEM.

An evaluation point is an epoch (the epoch records: axis ``"epoch"``) or the k-th multiple of
the trainer's ``eval_every_samples`` (the eval records: axis ``"evaluation"``; point k is the
first evaluation at or after k·N samples, point 0 the evaluation before training).

The building blocks of the comparison (`adabatch.experiments.comparison`) and of the plots.
A JSON ``null`` is an undefined value and is left out of means; where no run has a value the
mean is ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._over_seeds import mean_sem
from .run_dirs import Run

__all__ = [
    "AXES",
    "Curve",
    "by_epoch",
    "by_point",
    "common_epochs",
    "first_reaching",
    "mean_curve",
    "number",
    "step_curve",
]

#: The axes of evaluation points: epochs, or evaluations every N samples.
AXES = ("epoch", "evaluation")


@dataclass(frozen=True)
class Curve:
    """A value averaged over runs (seeds) at each point of a common x axis.

    Attributes:
        x: The x values: epoch numbers (`mean_curve`) or bin centres (`step_curve`).
        mean: The mean over runs at each x (``nan`` where no run has a value).
        sem: The standard error of that mean (sample standard deviation / √n; 0 for one run).
        low: The minimum over runs at each x.
        high: The maximum over runs at each x.
        n: The number of runs averaged.
    """

    x: tuple[float, ...]
    mean: tuple[float, ...]
    sem: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int


def number(value: Any) -> float | None:
    """``value`` as a float; ``None`` for JSON null, missing or non-numeric values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _spread(values: Sequence[float]) -> tuple[float, float]:
    if not values or any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return min(values), max(values)


def _aggregate(x: list[float], columns: list[list[float | None]], n: int) -> Curve:
    """A `Curve` from one list of per-run values at each x."""
    means, sems, lows, highs = [], [], [], []
    for values in columns:
        mean, sem = mean_sem(values)
        low, high = _spread([v for v in values if v is not None])
        means.append(mean)
        sems.append(sem)
        lows.append(low)
        highs.append(high)
    return Curve(tuple(x), tuple(means), tuple(sems), tuple(lows), tuple(highs), n)


def by_epoch(run: Run) -> dict[int, dict[str, Any]]:
    """The run's epoch records by epoch number."""
    return {record["epoch"]: record for record in run.epochs if "epoch" in record}


def by_point(run: Run, axis: str = "epoch") -> dict[int, dict[str, Any]]:
    """The run's evaluation records by point number on ``axis`` (see the module docstring).

    On ``"evaluation"``, a step that passes several multiples of N (a batch larger than N)
    evaluates once: that record stands for every point it passed, so that runs of different
    batch sizes share their points.

    Raises:
        ValueError: ``axis`` is not one of `AXES`.
    """
    if axis == "epoch":
        return by_epoch(run)
    if axis != "evaluation":
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    table: dict[int, dict[str, Any]] = {}
    start = by_epoch(run).get(0)
    if start is not None:
        table[0] = start
    for record in run.evals:
        reached = record.get("evaluation")
        if not isinstance(reached, int):
            continue
        for point in range(max(table, default=0) + 1, reached + 1):
            table[point] = record
    return table


def common_epochs(runs: Sequence[Run], axis: str = "epoch") -> list[int]:
    """The point numbers on ``axis`` for which every run of ``runs`` has a record, in order."""
    if not runs:
        return []
    shared = set(by_point(runs[0], axis))
    for run in runs[1:]:
        shared &= set(by_point(run, axis))
    return sorted(shared)


def mean_curve(runs: Sequence[Run], key: str, axis: str = "epoch") -> Curve:
    """The mean and standard error over runs of ``key`` in the epoch records, epoch by epoch.

    Definition: for each epoch number ``e`` that *every* run has an epoch record for (so, for
    runs of different lengths, their common prefix), ``mean[e]`` is the mean over runs of
    ``record[key]`` and ``sem[e]`` the sample standard deviation over √n (0 when n = 1); ``low``
    and ``high`` are the minimum and maximum. Runs whose value is null at ``e`` are left out of
    that epoch's statistics; ``nan`` when no run has one.

    Args:
        runs: The runs (typically the seeds of one method).
        key: An epoch record field, e.g. ``"test_accuracy"``, ``"time"``, ``"batch_size"``.
        axis: ``"epoch"`` (epoch records) or ``"evaluation"`` (eval records, see `by_point`).

    Returns:
        The curve, with the point numbers as ``x``.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("mean_curve needs at least one run")
    epochs = common_epochs(runs, axis)
    tables = [by_point(run, axis) for run in runs]
    columns = [[number(table[epoch].get(key)) for table in tables] for epoch in epochs]
    return _aggregate([float(epoch) for epoch in epochs], columns, len(runs))


def _binned(
    records: list[dict[str, Any]], key: str, x: str, width: float, bins: int
) -> list[float | None]:
    """One run's ``key`` averaged in bins of ``x`` (weighted by the ``x`` each record covers).

    Each record covers ``(previous x, x]``; empty bins are linearly interpolated between the
    nearest non-empty ones (and held constant past the first and last).
    """
    sums = [0.0] * bins
    weights = [0.0] * bins
    previous = 0.0
    for record in records:
        position, value = number(record.get(x)), number(record.get(key))
        if position is None:
            continue
        weight, previous = max(position - previous, 0.0), max(position, previous)
        if value is None or position > bins * width * (1 + 1e-12):
            continue
        index = min(max(math.ceil(position / width) - 1, 0), bins - 1)
        sums[index] += weight * value
        weights[index] += weight
    filled = [(i, sums[i] / weights[i]) for i in range(bins) if weights[i] > 0]
    if not filled:
        return [None] * bins
    result: list[float | None] = []
    k = 0  # filled[k] is the first filled bin at or after i
    for i in range(bins):
        while k < len(filled) and filled[k][0] < i:
            k += 1
        if k == len(filled):
            result.append(filled[-1][1])
        elif filled[k][0] == i or k == 0:
            result.append(filled[k][1])
        else:
            (i0, v0), (i1, v1) = filled[k - 1], filled[k]
            result.append(v0 + (v1 - v0) * (i - i0) / (i1 - i0))
    return result


def step_curve(
    runs: Sequence[Run], key: str = "loss", *, x: str = "samples", bins: int = 100
) -> Curve:
    """The step records' ``key`` against ``x``, averaged in bins, then over runs.

    Definition: the range from 0 to the smallest final ``x`` over runs is cut into ``bins``
    equal bins (fewer when a run has fewer step records). In each run, a step record stands for
    the ``x`` consumed since the previous record, so a bin's value is the mean of the records
    ending in it weighted by the ``x`` each covers; an empty bin is interpolated from its
    neighbours. Then, per bin, the mean, standard error, minimum and maximum over runs.

    Args:
        runs: The runs (typically the seeds of one method).
        key: A step record field, e.g. ``"loss"``.
        x: The step record field of the x axis, e.g. ``"samples"``, ``"time"``, ``"step"``.
        bins: The most bins.

    Returns:
        The curve, with the bin centres as ``x`` (empty when no run has step records).
    """
    with_steps = [run for run in runs if run.steps]
    ends = [number(run.steps[-1].get(x)) for run in with_steps]
    if not with_steps or any(end is None for end in ends):
        return _aggregate([], [], len(with_steps))
    end = min(e for e in ends if e is not None)
    bins = min(bins, *(len(run.steps) for run in with_steps))
    if end <= 0 or bins < 1:
        return _aggregate([], [], len(with_steps))
    width = end / bins
    per_run = [_binned(run.steps, key, x, width, bins) for run in with_steps]
    per_run = [values for values in per_run if any(v is not None for v in values)]
    columns = [[values[i] for values in per_run] for i in range(bins)]
    centres = [(i + 0.5) * width for i in range(bins)]
    return _aggregate(centres, columns, len(per_run))


def first_reaching(
    curve_values: Sequence[float | None], threshold: float, *, higher: bool = True
) -> int | None:
    """The index of the first value at or above ``threshold``, ``None`` if none is.

    With ``higher=False`` (a loss), the first value at or below it. Null and ``nan`` values
    never reach the threshold.
    """
    for index, value in enumerate(curve_values):
        if value is None or math.isnan(value):
            continue
        if (value >= threshold) if higher else (value <= threshold):
            return index
    return None
