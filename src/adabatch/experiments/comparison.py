"""Metrics comparing methods over seeds, computed from saved runs only (no training).

The speed metric is the DiveBatch paper's: the first evaluation point (an epoch, or for a
language model every N tokens) at which the metric's curve, averaged over seeds, reaches a
threshold, and the training samples, tokens, steps and seconds spent by then (evaluation
excluded). The metric is the test accuracy (higher is better) or the validation loss (lower is
better; `METRICS`). Two thresholds are used:

- a common *target* (given, from the run configs, or the first baseline's final value
  ``within`` worse), which gives the speed-ups over the baselines;
- each method's *own final value*, ``within`` worse ("epochs to ±1%").

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
from .curves import AXES, Curve, by_point, first_reaching, mean_curve, number
from .run_dirs import Run

__all__ = ["COMPLETED", "METRICS", "Comparison", "MethodSummary", "Metric", "Reach", "compare"]

COMPLETED = "completed"


@dataclass(frozen=True)
class Metric:
    """What a comparison ranks by: a field of the evaluation records and its direction.

    Attributes:
        key: The record field (``"test_accuracy"``, ``"test_loss"``).
        name: Its name in tables and plots.
        higher_is_better: Whether a larger value is better (accuracy) or smaller (a loss).
        unit: Appended to values in the text (``"%"``, ``""``).
        within: The default tolerance of the own-final criterion, in the metric's unit.
    """

    key: str
    name: str
    higher_is_better: bool
    unit: str
    within: float

    def worse(self, value: float, by: float) -> float:
        """``value`` made worse by ``by``: lower for accuracy, higher for a loss."""
        return value - by if self.higher_is_better else value + by


#: The metrics a comparison can rank by, by record key.
METRICS = {
    "test_accuracy": Metric("test_accuracy", "test accuracy", True, "%", 1.0),
    "test_loss": Metric("test_loss", "validation loss", False, "", 0.02),
}


@dataclass(frozen=True)
class Reach:
    """Where a method first reaches a threshold of the metric, averaged over its seeds.

    Attributes:
        point: The first evaluation point (epoch, or evaluation k) whose seed-averaged metric
            reaches the threshold.
        steps: The mean over seeds of the optimizer steps done by then.
        samples: The mean over seeds of the training samples consumed by then.
        time: The mean over seeds of the training seconds spent by then (evaluation excluded).
        tokens: The mean over seeds of the training tokens by then (``nan`` for non-text runs).
        rounds: The mean over seeds of the communication rounds by then: local SGD's
            synchronisations, or one per step under DDP (``nan`` for one process).
    """

    point: int
    steps: float
    samples: float
    time: float
    tokens: float = math.nan
    rounds: float = math.nan


@dataclass(frozen=True)
class MethodSummary:
    """One method's results over its seeds.

    Attributes:
        method: The method label.
        seeds: The number of runs (seeds) averaged.
        seed_values: Their seeds.
        points: The last evaluation point averaged (the last one all runs of the method have).
        final_mean: The mean over seeds of the metric at that point.
        final_sem: Its standard error (0 for one seed).
        final_batch_size: The mean over seeds of the batch size in force at that point.
        total_time: The mean over seeds of the training seconds at that point.
        total_tokens: The mean over seeds of the training tokens then (``nan``: not text).
        own_target: ``final_mean`` made ``within`` worse: the threshold of `to_own_final`.
        to_target: Where the mean metric first reaches the comparison's target
            (``None``: never, or no target).
        to_own_final: Where it first reaches `own_target` ("epochs to ±1%").
        speedup: Baseline label → the baseline's time to target / this method's time to target
            (``None`` when either never reaches it, or this method's time is 0).
        speedup_own: The same ratio with each method's time to its own final accuracy − within.
    """

    method: str
    seeds: int
    seed_values: tuple[int, ...]
    points: int
    final_mean: float
    final_sem: float
    final_batch_size: float
    total_time: float
    total_tokens: float
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
        metric: What the methods are ranked by (`METRICS`).
        axis: The evaluation points: ``"epoch"`` or ``"evaluation"`` (every N samples).
        target: The common target of the metric, or ``None`` when none could be chosen.
        target_note: How the target was chosen, in words.
        within: How much worse than a final value still counts as reaching it.
        method_order: Every known method label in display order (the suite's ``methods`` list,
            then other labels sorted); colours follow this order.
        runs: Method → the runs averaged for it.
        notes: Things a reader should know (skipped runs, truncated averages, conflicts).
    """

    title: str
    methods: tuple[MethodSummary, ...]
    baselines: tuple[str, ...]
    metric: Metric
    axis: str
    target: float | None
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


def _reach(
    runs: Sequence[Run], curve: Curve, threshold: float | None, metric: Metric, axis: str
) -> Reach | None:
    """Where ``curve`` (the runs' mean metric) first reaches ``threshold``, averaged."""
    if threshold is None:
        return None
    index = first_reaching(curve.mean, threshold, higher=metric.higher_is_better)
    if index is None:
        return None
    point = int(curve.x[index])
    records = [by_point(run, axis)[point] for run in runs]

    def mean_of(key: str) -> float:
        return mean_sem(number(record.get(key)) for record in records)[0]

    rounds = mean_sem(_rounds(run, record) for run, record in zip(runs, records, strict=True))
    return Reach(
        point=point,
        steps=mean_of("step"),
        samples=mean_of("samples"),
        time=mean_of("time"),
        tokens=mean_of("tokens"),
        rounds=rounds[0],
    )


def _rounds(run: Run, record: dict[str, Any]) -> float | None:
    """Communication rounds by ``record``: local SGD counts them; DDP has one per step."""
    if number(record.get("rounds")) is not None:
        return number(record["rounds"])
    distributed = run.config.get("distributed") or {}
    if int(distributed.get("world_size") or 1) > 1:
        return number(record.get("step"))  # one gradient all-reduce per step
    return None


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


@dataclass
class _Settings:
    """What the runs' ``report`` blocks say about how to compare them."""

    order: list[str]
    baselines: tuple[str, ...]
    target: float | None
    target_accuracy: float | None
    title: str | None
    metric: str | None
    axis: str | None
    within: float | None


def _settings(runs: Sequence[Run], notes: list[str]) -> _Settings:
    """Method order, baselines, target, title, metric, axis and tolerance from ``report``."""
    order: list[str] = []
    found: dict[str, list[Any]] = {
        k: []
        for k in ("baselines", "target", "target_accuracy", "title", "metric", "axis", "within")
    }
    for run in runs:
        report = run.report
        for label in report.get("methods") or []:
            if isinstance(label, str) and label not in order:
                order.append(label)
        if report.get("baselines"):
            found["baselines"].append(tuple(str(label) for label in report["baselines"]))
        # "target_accuracy": written before targets of other metrics (an accuracy target)
        for key in ("target", "target_accuracy"):
            if number(report.get(key)) is not None:
                found[key].append(float(report[key]))
        if number(report.get("within")) is not None:
            found["within"].append(float(report["within"]))
        for key in ("title", "metric", "axis"):
            if isinstance(report.get(key), str) and report[key]:
                found[key].append(report[key])
    chosen = {key: _first_distinct(values, key, notes) for key, values in found.items()}
    return _Settings(order=order, **{**chosen, "baselines": chosen["baselines"] or ()})


def _select(runs: Sequence[Run], include_incomplete: bool, axis: str) -> list[Run]:
    """The runs to compare; warns about each run left out."""
    selected = []
    for run in runs:
        if run.status != COMPLETED and not include_incomplete:
            warnings.warn(
                f"{run.path}: skipped: status {run.status!r}, not {COMPLETED!r} "
                "(include_incomplete=True keeps it)",
                stacklevel=3,
            )
        elif not run.epochs:
            warnings.warn(f"{run.path}: skipped: no epoch record", stacklevel=3)
        elif axis == "evaluation" and not run.evals:
            # only the evaluation before training would be left: its loss is no result
            warnings.warn(
                f"{run.path}: skipped: no eval record (run with train.eval_every > 0, or "
                "compare on axis='epoch')",
                stacklevel=3,
            )
        else:
            selected.append(run)
    return selected


def _summarise(
    method: str,
    runs: Sequence[Run],
    within: float,
    metric: Metric,
    axis: str,
    notes: list[str],
) -> dict[str, Any]:
    """A method's target-independent summary fields (and its metric's curve under ``curve``)."""
    curve = mean_curve(runs, metric.key, axis)
    what = "epoch" if axis == "epoch" else "evaluation point"
    if not curve.x:
        paths = ", ".join(str(run.path) for run in runs)
        raise ReportError(f"{method}: its runs have no {what} in common ({paths})")
    last = int(curve.x[-1])
    lengths = sorted({max(by_point(run, axis), default=0) for run in runs})
    if len(lengths) > 1:
        notes.append(
            f"{method}: runs of {', '.join(map(str, lengths))} {what}s; "
            f"averaged over the first {last}, which all of them have"
        )
    seeds = [run.seed for run in runs]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        notes.append(f"{method}: seed(s) {repeated} appear in several runs; all are averaged")
    finals = [by_point(run, axis)[last] for run in runs]
    final_mean, final_sem = mean_sem(number(r.get(metric.key)) for r in finals)
    own_target = metric.worse(final_mean, within)
    own = None if math.isnan(own_target) else own_target
    return {
        "curve": curve,
        "method": method,
        "seeds": len(runs),
        "seed_values": tuple(seeds),
        "points": last,
        "final_mean": final_mean,
        "final_sem": final_sem,
        "final_batch_size": mean_sem(number(r.get("batch_size")) for r in finals)[0],
        "total_time": mean_sem(number(r.get("time")) for r in finals)[0],
        "total_tokens": mean_sem(number(r.get("tokens")) for r in finals)[0],
        "own_target": own_target,
        "to_own_final": _reach(runs, curve, own, metric, axis),
    }


def compare(
    runs: Iterable[Run],
    *,
    target: float | None = None,
    within: float | None = None,
    baselines: Sequence[str] | None = None,
    include_incomplete: bool = False,
    title: str | None = None,
    metric: str | None = None,
    axis: str | None = None,
) -> Comparison:
    """Compare the methods of ``runs``, each averaged over its seeds.

    Runs are grouped by method, in the order of the configs' ``report.methods`` (labels not
    listed there come after, sorted). Runs whose status is not ``"completed"`` are skipped with
    a warning unless ``include_incomplete``; so are runs without epoch records. Runs of one
    method of different lengths are averaged over the points all of them have (with a note).

    The target is, in order of precedence: ``target``; the configs' ``report.target``; the
    first baseline's final mean made ``within`` worse (the first baseline with runs); none.
    `Comparison.target_note` says which.

    Args:
        runs: The runs, e.g. from `adabatch.experiments.run_dirs.find_runs`.
        target: The target of the metric (accuracy in %, or a loss), overriding the configs'.
        within: How much worse than a final value still counts as reaching it (the own-final
            criterion, and the target fallback); default: the configs' ``report.within``,
            else the metric's (1 point of accuracy, 0.02 of loss).
        baselines: The baseline labels, overriding the configs' ``report.baselines``.
        include_incomplete: Also average runs that are not ``"completed"``.
        title: The report title, overriding the configs' ``report.title``.
        metric: A key of `METRICS`, overriding the configs' ``report.metric`` (default
            ``"test_accuracy"``).
        axis: ``"epoch"`` or ``"evaluation"``, overriding the configs' ``report.axis``
            (default ``"epoch"``).

    Returns:
        The comparison.

    Raises:
        ReportError: No run is left to compare, or the runs of a method share no point.
        ValueError: ``within`` is negative or not finite, ``target`` is not finite, or
            ``metric``/``axis`` is unknown.
    """
    if within is not None and not (math.isfinite(within) and within >= 0):
        raise ValueError(f"within must be a finite number >= 0, got {within!r}")
    if target is not None and not math.isfinite(target):
        raise ValueError(f"target must be finite, got {target!r}")
    every = list(runs)
    notes: list[str] = []
    settings = _settings(every, notes)
    chosen_metric = _metric(metric or settings.metric or "test_accuracy")
    chosen_axis = axis or settings.axis or "epoch"
    if chosen_axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {chosen_axis!r}")
    selected = _select(every, include_incomplete, chosen_axis)
    if not selected:
        raise ReportError(
            f"no run to compare among {len(every)} run(s)"
            + ("" if include_incomplete else " (only completed runs count by default)")
        )
    if len(selected) < len(every):
        notes.insert(0, f"skipped {len(every) - len(selected)} run(s): see the warnings")
    if within is None:
        within = settings.within if settings.within is not None else chosen_metric.within
    order = settings.order
    groups: dict[str, list[Run]] = {}
    for run in sorted(selected, key=lambda r: (r.seed, str(r.path))):
        groups.setdefault(run.method, []).append(run)
    order += sorted(label for label in groups if label not in order)
    baseline_labels = tuple(baselines) if baselines is not None else tuple(settings.baselines)
    for label in baseline_labels:
        if label not in groups:
            notes.append(f"baseline {label!r} has no run to compare")

    fields = {
        method: _summarise(method, groups[method], within, chosen_metric, chosen_axis, notes)
        for method in order
        if method in groups
    }
    curves = {method: values.pop("curve") for method, values in fields.items()}

    unit = chosen_metric.unit or ""
    if target is not None:
        common: float | None = float(target)
        target_note = "given"
    elif settings.target is not None:
        common, target_note = settings.target, "from the run configs (report.target)"
    elif settings.target_accuracy is not None and chosen_metric.key == "test_accuracy":
        common = settings.target_accuracy
        target_note = "from the run configs (report.target_accuracy)"
    else:
        reference = next((label for label in baseline_labels if label in fields), None)
        final = math.nan if reference is None else fields[reference]["final_mean"]
        if reference is None or math.isnan(final):
            common, target_note = None, "none: no target given and no baseline run"
        else:
            common = chosen_metric.worse(final, within)
            sign = "−" if chosen_metric.higher_is_better else "+"
            shown = f"{final:.2f}%" if unit == "%" else f"{final:.4f}"
            target_note = f"{reference}'s final {chosen_metric.name} {shown} {sign} {within:g}" + (
                " points" if unit == "%" else ""
            )
            if reference != baseline_labels[0]:
                target_note += f" (first baseline {baseline_labels[0]!r} has no run)"

    to_target = {
        method: _reach(groups[method], curves[method], common, chosen_metric, chosen_axis)
        for method in fields
    }
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
        title=title or settings.title or str(every[0].config.get("experiment") or "comparison"),
        methods=summaries,
        baselines=baseline_labels,
        metric=chosen_metric,
        axis=chosen_axis,
        target=common,
        target_note=target_note,
        within=within,
        method_order=tuple(order),
        runs={method: tuple(groups[method]) for method in fields},
        notes=tuple(notes),
    )


def _metric(key: str) -> Metric:
    if key not in METRICS:
        raise ValueError(f"unknown metric {key!r}; valid: {', '.join(METRICS)}")
    return METRICS[key]
