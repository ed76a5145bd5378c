"""``adabatch report RUN_DIR...``: re-render the comparison tables and plots from saved runs.

Each argument is a run directory or a folder searched for run directories (e.g. ``runs/quick``).
Nothing is trained: the report reads ``config.json``, ``metrics.jsonl`` and ``summary.json``.
Runs are compared per suite; the tables go to stdout, and ``report.md``, ``report.json`` and the
plots to ``--out`` (default: the first argument's ``report/`` folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adabatch.experiments.report import write_report
from adabatch.experiments.run_dirs import find_runs

__all__ = ["HELP", "add_arguments", "run"]

HELP = "re-render comparison tables and plots from saved runs (no training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``adabatch report``."""
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run directories or folders")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: FIRST/report)")
    parser.add_argument(
        "--target",
        type=float,
        metavar="VALUE",
        help="the target of the suite's metric: accuracy in percent, or a validation loss "
        "(default: the suite's)",
    )
    parser.add_argument(
        "--include-incomplete", action="store_true", help="also average unfinished runs"
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    """Print the tables, write the files."""
    runs = find_runs(args.paths)
    out = Path(args.out) if args.out else Path(args.paths[0]) / "report"
    print(
        write_report(
            runs,
            out,
            target=args.target,
            include_incomplete=args.include_incomplete,
            plots=not args.no_plots,
        )
    )
    return 0
