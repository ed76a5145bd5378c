"""The comparison report of a set of runs, written next to them: table, JSON and plots.

`write_report` groups runs by suite (one comparison per suite), and for each writes
``report.md`` (the markdown table and its notes), ``report.json`` and four PNG plots into
``out_dir/SUITE/`` (or ``out_dir`` itself when there is one suite), and returns the text tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .comparison import compare
from .plots import plot_comparison
from .run_dirs import Run
from .tables import comparison_to_json, render_table

__all__ = ["write_report"]


def write_report(
    runs: Sequence[Run],
    out_dir: str | Path,
    *,
    target: float | None = None,
    include_incomplete: bool = False,
    plots: bool = True,
) -> str:
    """Compare ``runs`` per suite, write the report files, return the text tables."""
    out_dir = Path(out_dir)
    by_suite: dict[str, list[Run]] = {}
    for run in runs:
        by_suite.setdefault(run.config.get("suite") or "runs", []).append(run)
    texts = []
    for suite_name, suite_runs in by_suite.items():
        where = out_dir if len(by_suite) == 1 else out_dir / suite_name
        where.mkdir(parents=True, exist_ok=True)
        comparison = compare(suite_runs, target=target, include_incomplete=include_incomplete)
        text = render_table(comparison, "text")
        (where / "report.md").write_text(
            render_table(comparison, "markdown") + "\n", encoding="utf-8"
        )
        (where / "report.json").write_text(
            json.dumps(comparison_to_json(comparison), indent=2) + "\n", encoding="utf-8"
        )
        written = plot_comparison(comparison, where, title=suite_name) if plots else []
        files = ", ".join(p.name for p in [where / "report.md", where / "report.json", *written])
        texts.append(f"{text}\nwritten to {where}: {files}")
    return "\n\n".join(texts)
