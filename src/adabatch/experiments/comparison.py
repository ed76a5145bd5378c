"""Metrics comparing methods over seeds, computed from saved runs only (no training).

The speed metric is the DiveBatch paper's: the first epoch at which the accuracy curve, averaged
over seeds, reaches a threshold, and the training samples, steps and seconds spent by then
(evaluation excluded). Two thresholds are used:

- a common *target accuracy* (given, from the run configs, or the first baseline's final
  accuracy minus ``within`` points), which gives the speed-ups over the baselines;
- each method's *own final accuracy* minus ``within`` points ("epochs to ±1%").

Conventions: a JSON ``null`` is an undefined value and is left out of means; a value that cannot
be defined (no value at all) is ``nan`` in the summaries and ``None`` where a result may be
absent (a threshold never reached, a speed-up without both times).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._over_seeds import mean_sem
from ..errors import ReportError
from .curves import (
    Curve,
    by_epoch,
    first_reaching,
    mean_curve,
    number,
)
from .run_dirs import Run

__all__ = ["COMPLETED", "Comparison", "MethodSummary", "Reach", "compare"]

COMPLETED = "completed"


@dataclass(frozen=True)
class Reach:
    """Where a method first reaches an accuracy threshold, averaged over its seeds.

    Attributes:
        epochs: The first epoch whose seed-averaged test accuracy is at or above the threshold.
        steps: The mean over seeds of the optimizer steps done by the end of that epoch.
        samples: The mean over seeds of the training samples consumed by then.
        time: The mean over seeds of the training seconds spent by then (evaluation excluded).
    """

    epochs: int
    steps: float
    samples: float
    time: float


@dataclass(frozen=True)
class MethodSummary:
    """One method's results over its seeds.

    Attributes:
        method: The method label.
        seeds: The number of runs (seeds) averaged.
        seed_values: Their seeds.
        epochs: The last epoch averaged (the last one all runs of the method have).
        final_accuracy_mean: The mean over seeds of the test accuracy (%) at that epoch.
        final_accuracy_sem: Its standard error (0 for one seed).
        final_batch_size: The mean over seeds of the batch size in force at that epoch.
        total_time: The mean over seeds of the training seconds at that epoch.
        own_target: ``final_accuracy_mean - within``: the threshold of `to_own_final`.
        to_target: Where the mean accuracy first reaches the comparison's target accuracy
            (``None``: never, or no target).
        to_own_final: Where it first reaches `own_target` ("epochs to ±1%").
        speedup: Baseline label → the baseline's time to target / this method's time to target
            (``None`` when either never reaches it, or this method's time is 0).
        speedup_own: The same ratio with each method's time to its own final accuracy − within.
    """

    method: str
    seeds: int
    seed_values: tuple[int, ...]
    epochs: int
    final_accuracy_mean: float
    final_accuracy_sem: float
    final_batch_size: float
    total_time: float
    own_target: float
    to_target: Reach | None
    to_own_final: Reach | None
    speedup: dict[str, float | None]
    speedup_own: dict[str, float | None]


@dataclass(frozen=True)
class Comparison:
    """The comparison of several methods, as made by `compare`.

    Attributes:
        title: The report title.
        methods: One summary per method with runs, in report order.
        baselines: The baseline labels (speed-ups are relative to these).
        target_accuracy: The common target accuracy (%), or ``None`` when none could be chosen.
        target_note: How the target was chosen, in words.
        within: The points below a final accuracy that count as reaching it.
        method_order: Every known method label in display order (the suite's ``methods`` list,
            then other labels sorted); colours follow this order.
        runs: Method → the runs averaged for it.
        notes: Things a reader should know (skipped runs, truncated averages, conflicts).
    """

    title: str
    methods: tuple[MethodSummary, ...]
    baselines: tuple[str, ...]
    target_accuracy: float | None
    target_note: str
    within: float
    method_order: tuple[str, ...]
    runs: dict[str, tuple[Run, ...]]
    notes: tuple[str, ...]

    def summary(self, method: str) -> MethodSummary:
        """The summary of ``method``.

        Raises:
            KeyError: No run of ``method`` was compared.
        """
        for summary in self.methods:
            if summary.method == method:
                return summary
        raise KeyError(f"no method {method!r}; compared: {[s.method for s in self.methods]}")


def _reach(runs: Sequence[Run], accuracy: Curve, threshold: float | None) -> Reach | None:
    """Where ``accuracy`` (the runs' mean curve) first reaches ``threshold``, averaged."""
    if threshold is None:
        return None
    index = first_reaching(accuracy.mean, threshold)
    if index is None:
        return None
    epoch = int(accuracy.x[index])
    records = [by_epoch(run)[epoch] for run in runs]

    def mean_of(key: str) -> float:
        return mean_sem(number(record.get(key)) for record in records)[0]

    return Reach(
        epochs=epoch, steps=mean_of("step"), samples=mean_of("samples"), time=mean_of("time")
    )


def _ratio(baseline: Reach | None, own: Reach | None) -> float | None:
    if baseline is None or own is None:
        return None
    if not (own.time > 0 and math.isfinite(own.time) and math.isfinite(baseline.time)):
        return None
    return baseline.time / own.time


def _first_distinct(values: list[Any], what: str, notes: list[str]) -> Any:
    """The first of ``values``; a note when the runs disagree."""
    distinct: list[Any] = []
    for value in values:
        if value not in distinct:
            distinct.append(value)
    if len(distinct) > 1:
        notes.append(f"the runs disagree on report.{what} ({distinct}); using {distinct[0]!r}")
    return distinct[0] if distinct else None


def _settings(
    runs: Sequence[Run], notes: list[str]
) -> tuple[list[str], tuple[str, ...], float | None, str | None]:
    """Method order, baselines, target and title from the runs' ``report`` blocks."""
    order: list[str] = []
    baselines, targets, titles = [], [], []
    for run in runs:
        report = run.report
        for label in report.get("methods") or []:
            if isinstance(label, str) and label not in order:
                order.append(label)
        if report.get("baselines"):
            baselines.append(tuple(str(label) for label in report["baselines"]))
        if number(report.get("target_accuracy")) is not None:
            targets.append(float(report["target_accuracy"]))
        if isinstance(report.get("title"), str) and report["title"]:
            titles.append(report["title"])
    return (
        order,
        _first_distinct(baselines, "baselines", notes) or (),
        _first_distinct(targets, "target_accuracy", notes),
        _first_distinct(titles, "title", notes),
    )


def _select(runs: Iterable[Run], include_incomplete: bool) -> tuple[list[Run], list[Run]]:
    """(All runs, the runs to compare); warns about each run left out."""
    every, selected = [], []
    for run in runs:
        every.append(run)
        if run.status != COMPLETED and not include_incomplete:
            warnings.warn(
                f"{run.path}: skipped: status {run.status!r}, not {COMPLETED!r} "
                "(include_incomplete=True keeps it)",
                stacklevel=3,
            )
        elif not run.epochs:
            warnings.warn(f"{run.path}: skipped: no epoch record", stacklevel=3)
        else:
            selected.append(run)
    return every, selected


def _summarise(method: str, runs: Sequence[Run], within: float, notes: list[str]) -> dict[str, Any]:
    """A method's target-independent summary fields (and its accuracy curve under ``curve``)."""
    accuracy = mean_curve(runs, "test_accuracy")
    if not accuracy.x:
        paths = ", ".join(str(run.path) for run in runs)
        raise ReportError(f"{method}: its runs have no epoch in common ({paths})")
    last = int(accuracy.x[-1])
    lengths = sorted({int(run.epochs[-1].get("epoch", 0)) for run in runs})
    if len(lengths) > 1:
        notes.append(
            f"{method}: runs of {', '.join(map(str, lengths))} epochs; "
            f"averaged over the first {last} epochs, which all of them have"
        )
    seeds = [run.seed for run in runs]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        notes.append(f"{method}: seed(s) {repeated} appear in several runs; all are averaged")
    finals = [by_epoch(run)[last] for run in runs]
    final_mean, final_sem = mean_sem(number(r.get("test_accuracy")) for r in finals)
    own_target = final_mean - within
    return {
        "curve": accuracy,
        "method": method,
        "seeds": len(runs),
        "seed_values": tuple(seeds),
        "epochs": last,
        "final_accuracy_mean": final_mean,
        "final_accuracy_sem": final_sem,
        "final_batch_size": mean_sem(number(r.get("batch_size")) for r in finals)[0],
        "total_time": mean_sem(number(r.get("time")) for r in finals)[0],
        "own_target": own_target,
        "to_own_final": _reach(runs, accuracy, None if math.isnan(own_target) else own_target),
    }


def compare(
    runs: Iterable[Run],
    *,
    target_accuracy: float | None = None,
    within: float = 1.0,
    baselines: Sequence[str] | None = None,
    include_incomplete: bool = False,
    title: str | None = None,
) -> Comparison:
    """Compare the methods of ``runs``, each averaged over its seeds.

    Runs are grouped by method, in the order of the configs' ``report.methods`` (labels not
    listed there come after, sorted). Runs whose status is not ``"completed"`` are skipped with
    a warning unless ``include_incomplete``; so are runs without epoch records. Runs of one
    method of different lengths are averaged over the epochs all of them have (with a note).

    The target accuracy is, in order of precedence: ``target_accuracy``; the configs'
    ``report.target_accuracy``; the first baseline's final mean accuracy minus ``within`` points
    (the first baseline with runs); none. `Comparison.target_note` says which.

    Args:
        runs: The runs, e.g. from `adabatch.experiments.run_dirs.find_runs`.
        target_accuracy: The target accuracy (%), overriding the configs'.
        within: Points below a final accuracy that still count as reaching it (the own-final
            criterion, and the target fallback).
        baselines: The baseline labels, overriding the configs' ``report.baselines``.
        include_incomplete: Also average runs that are not ``"completed"``.
        title: The report title, overriding the configs' ``report.title``.

    Returns:
        The comparison.

    Raises:
        ReportError: No run is left to compare, or the runs of a method share no epoch.
        ValueError: ``within`` is negative or not finite, or ``target_accuracy`` is not finite.
    """
    if not (math.isfinite(within) and within >= 0):
        raise ValueError(f"within must be a finite number >= 0, got {within!r}")
    if target_accuracy is not None and not math.isfinite(target_accuracy):
        raise ValueError(f"target_accuracy must be finite, got {target_accuracy!r}")
    every, selected = _select(runs, include_incomplete)
    if not selected:
        raise ReportError(
            f"no run to compare among {len(every)} run(s)"
            + ("" if include_incomplete else " (only completed runs count by default)")
        )
    notes: list[str] = []
    if len(selected) < len(every):
        notes.append(f"skipped {len(every) - len(selected)} run(s): see the warnings")
    order, config_baselines, config_target, config_title = _settings(every, notes)
    groups: dict[str, list[Run]] = {}
    for run in sorted(selected, key=lambda r: (r.seed, str(r.path))):
        groups.setdefault(run.method, []).append(run)
    order += sorted(label for label in groups if label not in order)
    baseline_labels = tuple(baselines) if baselines is not None else tuple(config_baselines)
    for label in baseline_labels:
        if label not in groups:
            notes.append(f"baseline {label!r} has no run to compare")

    fields = {
        method: _summarise(method, groups[method], within, notes)
        for method in order
        if method in groups
    }
    curves = {method: values.pop("curve") for method, values in fields.items()}

    if target_accuracy is not None:
        target: float | None = float(target_accuracy)
        target_note = "given"
    elif config_target is not None:
        target, target_note = config_target, "from the run configs (report.target_accuracy)"
    else:
        reference = next((label for label in baseline_labels if label in fields), None)
        final = math.nan if reference is None else fields[reference]["final_accuracy_mean"]
        if reference is None or math.isnan(final):
            target, target_note = None, "none: no target accuracy given and no baseline run"
        else:
            target = final - within
            target_note = f"{reference}'s final accuracy {final:.2f}% − {within:g} points"
            if reference != baseline_labels[0]:
                target_note += f" (first baseline {baseline_labels[0]!r} has no run)"

    to_target = {method: _reach(groups[method], curves[method], target) for method in fields}
    to_own = {method: values["to_own_final"] for method, values in fields.items()}
    summaries = tuple(
        MethodSummary(
            **values,
            to_target=to_target[method],
            speedup={b: _ratio(to_target.get(b), to_target[method]) for b in baseline_labels},
            speedup_own={b: _ratio(to_own.get(b), to_own[method]) for b in baseline_labels},
        )
        for method, values in fields.items()
    )
    return Comparison(
        title=title or config_title or str(every[0].config.get("experiment") or "comparison"),
        methods=summaries,
        baselines=baseline_labels,
        target_accuracy=target,
        target_note=target_note,
        within=within,
        method_order=tuple(order),
        runs={method: tuple(groups[method]) for method in fields},
        notes=tuple(notes),
    )
