"""``adabatch compare SUITE [--seeds N]``: run every method of a suite, then report.

Runs go to ``--out/SUITE/METHOD/seedS`` (default ``--out runs``), one after the other; the
comparison (``adabatch report``'s output) to ``--out/SUITE/report``. A suite made of parts
(``mnist``) runs and reports each part. Existing runs are refused unless ``--resume``
(completed runs are kept, unfinished ones continued) or ``--overwrite``. Overrides
(``--epochs=3``, ``--policy.max_batch_size=256``) apply to every method; ``--seed`` sets the
first seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adabatch.experiments.config import ConfigError, parse_overrides
from adabatch.experiments.outputs import write_report
from adabatch.experiments.report import find_runs
from adabatch.experiments.run import (
    DivergedRunError,
    default_run_dir,
    experiment_config,
    run_experiment,
)
from adabatch.experiments.suites import suite as get_suite

from .run import add_run_options

__all__ = ["HELP", "OVERRIDES", "add_arguments", "run"]

HELP = "run every method of a suite over seeds, then print the comparison and write plots"
OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``adabatch compare``."""
    parser.add_argument("suite", metavar="SUITE", help="a suite name (adabatch list)")
    parser.add_argument(
        "--seeds", type=int, metavar="N", help="seeds per method (default: the suite's)"
    )
    parser.add_argument(
        "--methods", metavar="A,B", help="only these methods (comma-separated labels)"
    )
    add_run_options(parser)
    parser.set_defaults(out=None)


def run(args: argparse.Namespace) -> int:
    """Run the suite(s) and report."""
    top = get_suite(args.suite)
    parts = [get_suite(name) for name in top.parts] if top.parts else [top]
    root = Path(args.out) if args.out else Path("runs")
    seeds = args.seeds if args.seeds is not None else top.seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    overrides = parse_overrides(args.overrides)
    wanted = None if not args.methods else [m.strip() for m in args.methods.split(",")]
    failed: list[str] = []
    for part in parts:
        methods = part.methods if wanted is None else tuple(part.method(m) for m in wanted)
        first_seed = experiment_config(part, methods[0], overrides).train.seed
        for method in methods:
            for seed in range(first_seed, first_seed + seeds):
                config = experiment_config(part, method, [*overrides, ("train.seed", seed)])
                try:
                    outcome = run_experiment(
                        part,
                        method,
                        config,
                        default_run_dir(part, method, seed, root),
                        resume=args.resume,
                        overwrite=args.overwrite,
                        progress=not args.no_progress,
                    )
                except DivergedRunError as exc:
                    # One diverged method is a result, not a reason to drop the others.
                    print(f"adabatch: {exc}", file=sys.stderr)
                    failed.append(f"{method.label} seed {seed} (diverged)")
                    continue
                if outcome.status == "interrupted":
                    print(
                        "adabatch: interrupted; continue the comparison with --resume",
                        file=sys.stderr,
                    )
                    return 130
        runs = [r for r in find_runs([root / part.name]) if r.method in {m.label for m in methods}]
        print()
        print(write_report(runs, root / part.name / "report"))
    if failed:
        print(f"adabatch: not completed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
