"""Tables of a `Comparison`: aligned text, GitHub markdown, and a JSON-ready dictionary."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .._json import json_safe
from .comparison import Comparison, MethodSummary, Reach

__all__ = ["comparison_to_json", "format_count", "render_table"]

MISSING = "—"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def format_count(value: float | None) -> str:
    """A count in a few characters: ``980``, ``12.3k``, ``1.2M``, ``350M``; ``—`` if undefined."""
    if value is None or not _finite(value):
        return MISSING
    if round(abs(value)) < 1000:
        return f"{value:.0f}"
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        scaled = value / scale
        text = f"{scaled:.1f}" if round(abs(scaled), 1) < 100 else f"{scaled:.0f}"
        if abs(float(text)) < 1000 or suffix == "T":
            return text + suffix
    raise AssertionError("unreachable")  # pragma: no cover


def _integer(value: float | None) -> str:
    return f"{round(value):,}" if value is not None and _finite(value) else MISSING


def _fixed(value: float | None, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None and _finite(value) else MISSING


def _value(mean: float, sem: float, digits: int) -> str:
    if not _finite(mean):
        return MISSING
    return f"{mean:.{digits}f} ± {sem:.{digits}f}" if _finite(sem) else f"{mean:.{digits}f}"


def _speedup(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None and _finite(value) else MISSING


@dataclasses.dataclass(frozen=True)
class _Columns:
    """Which optional columns a comparison's table has, decided once per table.

    Attributes:
        epochs: the points are epochs (an epochs column; else evaluations every N).
        tokens: the runs count tokens (text): tokens instead of samples.
        rounds: some method communicated (local SGD or DDP): a rounds column.
        digits: decimals of the metric (accuracy in %, a loss in nats).
    """

    epochs: bool
    tokens: bool
    rounds: bool
    digits: int


def _columns(comparison: Comparison) -> _Columns:
    return _Columns(
        epochs=comparison.axis == "epoch",
        tokens=any(_finite(s.total_tokens) for s in comparison.methods),
        rounds=any(
            s.to_target is not None and _finite(s.to_target.rounds) for s in comparison.methods
        ),
        digits=2 if comparison.metric.higher_is_better else 3,
    )


def _headers(comparison: Comparison, columns: _Columns) -> list[str]:
    metric = comparison.metric
    sign = "−" if metric.higher_is_better else "+"
    own = f"final{sign}{comparison.within:g}"
    short = "acc (%)" if metric.key == "test_accuracy" else metric.name
    points = "epochs" if columns.epochs else None
    count = "tokens" if columns.tokens else "samples"
    return [
        "method",
        "seeds",
        f"final {short}",
        *([f"{points}→target"] if points else []),
        "steps→target",
        *(["rounds→target"] if columns.rounds else []),
        f"{count}→target",
        "time→target (s)",
        *([f"{points}→{own}"] if points else [f"{count}→{own}"]),
        f"time→{own} (s)",
        *(f"×{baseline}" for baseline in comparison.baselines),
    ]


def _row(comparison: Comparison, summary: MethodSummary, columns: _Columns) -> list[str]:
    target, own = summary.to_target, summary.to_own_final
    epochs = columns.epochs

    def count(reach: Reach | None) -> str:
        if reach is None:
            return MISSING
        return format_count(reach.tokens if columns.tokens else reach.samples)

    return [
        summary.method,
        str(summary.seeds),
        _value(summary.final_mean, summary.final_sem, columns.digits),
        *([MISSING if target is None else str(target.point)] if epochs else []),
        MISSING if target is None else _integer(target.steps),
        *([MISSING if target is None else _integer(target.rounds)] if columns.rounds else []),
        count(target),
        MISSING if target is None else _fixed(target.time),
        (MISSING if own is None else str(own.point)) if epochs else count(own),
        MISSING if own is None else _fixed(own.time),
        *(_speedup(summary.speedup.get(baseline)) for baseline in comparison.baselines),
    ]


def _preamble(comparison: Comparison, columns: _Columns) -> list[str]:
    metric, target = comparison.metric, comparison.target
    within = f"{comparison.within:g}"
    sign, reaches = ("−", "≥") if metric.higher_is_better else ("+", "≤")
    where = "first epoch" if columns.epochs else "first evaluation (every N training samples)"
    shown = MISSING if target is None else f"{target:.{columns.digits}f}{metric.unit}"
    lines = [
        f"Target {metric.name}: {shown} ({comparison.target_note})",
        f"→target: {where} whose seed-averaged {metric.name} is {reaches} the target; "
        f"→final{sign}{within}: {reaches} the method's own final value {sign} {within}.",
        "Steps, "
        + ("tokens" if columns.tokens else "samples")
        + " and training time (evaluation excluded) by then, seed-averaged.",
    ]
    if comparison.baselines:
        lines.append(
            "×baseline: the baseline's training time to the target / the method's "
            f"({MISSING} when either never reaches it)."
        )
    return lines


def _text(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(header), "  ".join("-" * width for width in widths), *map(line, rows)]


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = "| :--- | " + " | ".join("---:" for _ in header[1:]) + " |"
    return [line(header), rule, *map(line, rows)]


def render_table(comparison: Comparison, fmt: str = "text") -> str:
    """The comparison as a table, one row per method, after lines saying how it was computed.

    Columns: method; seeds; the final value of the metric (mean ± standard error over seeds);
    to the target: epochs (when the points are epochs), optimizer steps, training samples (or
    tokens, for text), training seconds; to the method's own final value made ``within``
    worse: epochs (or samples/tokens), seconds; then one ``×baseline`` column per baseline:
    the baseline's time to target over the method's (``—`` when undefined).

    Args:
        comparison: From `adabatch.experiments.comparison.compare`.
        fmt: ``"text"`` (aligned monospace columns) or ``"markdown"`` (a GitHub table).

    Returns:
        The table, ending with a newline.

    Raises:
        ValueError: ``fmt`` is neither ``"text"`` nor ``"markdown"``.
    """
    if fmt not in ("text", "markdown"):
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
    columns = _columns(comparison)
    header = _headers(comparison, columns)
    rows = [_row(comparison, summary, columns) for summary in comparison.methods]
    notes = [f"Note: {note}" for note in comparison.notes]
    if fmt == "text":
        lines = [comparison.title, *_preamble(comparison, columns), "", *_text(header, rows)]
        if notes:
            lines += ["", *notes]
    else:
        lines = [
            f"### {comparison.title}",
            "",
            *(f"{line}  " for line in _preamble(comparison, columns)),
        ]
        lines += ["", *_markdown(header, rows)]
        if notes:
            lines += ["", *(f"- {note}" for note in comparison.notes)]
    return "\n".join(lines) + "\n"


def comparison_to_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as a JSON-serialisable dictionary (for ``report.json``).

    Undefined numbers (``nan``, infinities) become ``null``; each method lists the run
    directories it averages under ``runs``.
    """
    methods = []
    for summary in comparison.methods:
        entry = dataclasses.asdict(summary)
        entry["runs"] = [str(run.path) for run in comparison.runs.get(summary.method, ())]
        methods.append(entry)
    return json_safe(
        {
            "title": comparison.title,
            "metric": comparison.metric.key,
            "axis": comparison.axis,
            "target": comparison.target,
            # the key of reports written before other metrics, for scripts that read it
            **(
                {"target_accuracy": comparison.target}
                if comparison.metric.key == "test_accuracy"
                else {}
            ),
            "target_note": comparison.target_note,
            "within": comparison.within,
            "baselines": comparison.baselines,
            "method_order": comparison.method_order,
            "methods": methods,
            "notes": comparison.notes,
        }
    )
