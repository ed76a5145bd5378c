"""Tables of a `Comparison`: aligned text, GitHub markdown, and a JSON-ready dictionary."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .._json import json_safe
from .comparison import Comparison, MethodSummary

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


def _accuracy(mean: float, sem: float) -> str:
    if not _finite(mean):
        return MISSING
    return f"{mean:.2f} ± {sem:.2f}" if _finite(sem) else f"{mean:.2f}"


def _speedup(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None and _finite(value) else MISSING


def _headers(comparison: Comparison) -> list[str]:
    own = f"final−{comparison.within:g}"
    return [
        "method",
        "seeds",
        "final acc (%)",
        "epochs→target",
        "steps→target",
        "samples→target",
        "time→target (s)",
        f"epochs→{own}",
        f"time→{own} (s)",
        *(f"×{baseline}" for baseline in comparison.baselines),
    ]


def _row(summary: MethodSummary, baselines: tuple[str, ...]) -> list[str]:
    target, own = summary.to_target, summary.to_own_final
    return [
        summary.method,
        str(summary.seeds),
        _accuracy(summary.final_accuracy_mean, summary.final_accuracy_sem),
        MISSING if target is None else str(target.epochs),
        MISSING if target is None else _integer(target.steps),
        MISSING if target is None else format_count(target.samples),
        MISSING if target is None else _fixed(target.time),
        MISSING if own is None else str(own.epochs),
        MISSING if own is None else _fixed(own.time),
        *(_speedup(summary.speedup.get(baseline)) for baseline in baselines),
    ]


def _preamble(comparison: Comparison) -> list[str]:
    target = comparison.target_accuracy
    within = f"{comparison.within:g}"
    lines = [
        f"Target accuracy: {MISSING if target is None else f'{target:.2f}%'} "
        f"({comparison.target_note})",
        f"→target: first epoch whose seed-averaged test accuracy is ≥ the target; "
        f"→final−{within}: ≥ the method's own final accuracy − {within} points.",
        "Steps, samples and training time (evaluation excluded) at that epoch, seed-averaged.",
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

    Columns: method; seeds; final test accuracy (mean ± standard error over seeds); to the
    target accuracy: epochs, optimizer steps, training samples, training seconds; to the
    method's own final accuracy − ``within``: epochs, seconds; then one ``×baseline`` column
    per baseline: the baseline's time to target over the method's (``—`` when undefined).

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
    header = _headers(comparison)
    rows = [_row(summary, comparison.baselines) for summary in comparison.methods]
    notes = [f"Note: {note}" for note in comparison.notes]
    if fmt == "text":
        lines = [comparison.title, *_preamble(comparison), "", *_text(header, rows)]
        if notes:
            lines += ["", *notes]
    else:
        lines = [f"### {comparison.title}", "", *(f"{line}  " for line in _preamble(comparison))]
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
            "target_accuracy": comparison.target_accuracy,
            "target_note": comparison.target_note,
            "within": comparison.within,
            "baselines": comparison.baselines,
            "method_order": comparison.method_order,
            "methods": methods,
            "notes": comparison.notes,
        }
    )
