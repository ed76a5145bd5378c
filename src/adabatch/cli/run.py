"""``adabatch run EXPERIMENT [--key=value ...]``: train one method of a suite into a run directory.

``EXPERIMENT`` is ``SUITE/METHOD`` (``adabatch list`` shows them). Any configuration key can be
overridden with ``--section.key=value`` (``--policy.delta=0.05``, ``--model.hidden=256,256``)
or a unique bare key (``--epochs=3``, ``--seed=1``). The run goes to ``--out`` (default
``runs/SUITE/METHOD/seedN``); a directory holding another run is refused unless ``--resume``
(continue from its last checkpoint, on the identical trajectory) or ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adabatch.experiments.config import parse_overrides
from adabatch.experiments.run import default_run_dir, experiment_config, run_experiment
from adabatch.experiments.suites import experiment

__all__ = ["HELP", "OVERRIDES", "add_arguments", "run"]

HELP = "train one experiment (SUITE/METHOD) and write its run directory"
OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``adabatch run``."""
    parser.epilog = (
        "Overrides: --section.key=value for any configuration key, e.g. --policy.delta=0.05 "
        "--optimizer.lr=0.1 --epochs=3 (see the run's config.json for every key)."
    )
    parser.add_argument(
        "experiment", metavar="EXPERIMENT", help="SUITE/METHOD, e.g. quick/divebatch"
    )
    add_run_options(parser)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``compare``."""
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/SUITE/...)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in the directory")
    group.add_argument(
        "--overwrite", action="store_true", help="delete the run in the directory and start again"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the experiment; exit status 0 when it completed (or was already complete)."""
    suite, method = experiment(args.experiment)
    config = experiment_config(suite, method, parse_overrides(args.overrides))
    out = Path(args.out) if args.out else default_run_dir(suite, method, config.train.seed)
    outcome = run_experiment(
        suite,
        method,
        config,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    s = outcome.summary
    acc = s.get("final_test_accuracy")
    print(
        f"{outcome.status}: {s['epochs']} epochs, {s['steps']} steps, {s['samples']:,} samples, "
        f"{s['train_time']:.1f} s training, final batch {s['final_batch_size']}"
        + ("" if acc is None else f", test accuracy {acc:.2f}%")
    )
    print(f"run directory: {outcome.path}")
    return 0 if outcome.status == "completed" else 1
