"""``adabatch compare SUITE [--seeds N]``: run every method of a suite, then report.

``--scale=gpu`` runs the suite's GPU configuration instead (``lm`` → ``lm-gpu``). Runs go to
``--out/SUITE/METHOD/seedS`` (default ``--out runs``), one after the other; the
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

from adabatch.distributed import launched_by_torchrun, rank
from adabatch.experiments.config import ConfigError, parse_overrides
from adabatch.experiments.report import write_report
from adabatch.experiments.run import (
    DivergedRunError,
    default_run_dir,
    experiment_config,
    run_experiment,
)
from adabatch.experiments.run_dirs import find_runs
from adabatch.experiments.suites import SUITES
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
    parser.add_argument(
        "--scale",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: the suite's configuration sized for one GPU (lm → lm-gpu)",
    )
    add_run_options(parser)
    parser.set_defaults(out=None)


#: The options of the ``sparse`` suite (its solvers take no `Config`), with their types.
SPARSE_OPTIONS = {"n": int, "d": int, "nnz": int, "epochs": float, "step": float}


def _options(items: list[str], kinds: dict[str, type], suite: str) -> dict[str, float | int]:
    """``--n=20000 --epochs=1`` → {"n": 20000, "epochs": 1.0} (errors name the valid ones)."""
    valid = ", ".join(f"--{k.replace('_', '-')}" for k in kinds)
    options: dict[str, float | int] = {}
    for item in items:
        key, sep, value = item.lstrip("-").partition("=")
        key = key.replace("-", "_")  # --per-round and --per_round alike
        if key not in kinds or not sep:
            raise ConfigError(f"the {suite} suite takes {valid} (as --key=value); got {item!r}")
        try:
            number = kinds[key](value)
        except ValueError:
            kind = kinds[key].__name__
            raise ConfigError(f"--{key} must be a number ({kind}), got {value!r}") from None
        if not number > 0:
            raise ConfigError(f"--{key} must be > 0, got {value!r}")
        options[key] = number
    return options


def _sparse_options(items: list[str]) -> dict[str, float | int]:
    """The sparse suite's options (see `_options`)."""
    return _options(items, SPARSE_OPTIONS, "sparse")


def _run_sparse(args: argparse.Namespace, seeds: int, root: Path) -> int:
    """``adabatch compare sparse``: the numpy-solver comparison, written like a report."""
    from adabatch.sparse.experiment import run_comparison

    options = _sparse_options(args.overrides)
    if args.methods:
        raise ConfigError("the sparse suite has no methods to choose: drop --methods")
    out = root / "sparse" / "report"
    if (out / "report.json").exists() and not args.overwrite:
        raise ConfigError(
            f"{out} holds a sparse comparison; pass --overwrite to replace it (it has no "
            f"partial state for --resume to continue)"
        )
    step = options.pop("step", None)
    text = run_comparison(out, seeds=seeds, step_size=step, **options)  # type: ignore[arg-type]
    print(text)
    print(f"\nwritten to {out}: report.md, report.json, loss_vs_samples.png")
    return 0


#: The options of the ``federated`` suite, with their types.
FEDERATED_OPTIONS = {
    "rounds": int,
    "clients": int,
    "per_round": int,
    "local_steps": int,
    "alpha": float,
    "target": float,
}


def _run_federated(args: argparse.Namespace, seeds: int, root: Path) -> int:
    """``adabatch compare federated``: the sequential FedAvg simulation, written as a report."""
    from adabatch.local.federated_compare import run_comparison

    options = _options(args.overrides, FEDERATED_OPTIONS, "federated")
    if args.methods:
        raise ConfigError("the federated suite runs all its methods: drop --methods")
    out = root / "federated" / "report"
    if (out / "report.json").exists() and not args.overwrite:
        raise ConfigError(f"{out} holds a federated comparison; pass --overwrite to replace it")
    text = run_comparison(out, seeds=seeds, **options)  # type: ignore[arg-type]
    print(text)
    print(f"\nwritten to {out}: report.md, report.json, federated.png")
    return 0


#: Suites that run their own solvers, not Trainer runs: why not under torchrun, the runner.
_OWN_RUNNERS = {
    "sparse": ("starts its own worker processes", _run_sparse),
    "federated": ("simulates its clients one after another in one process", _run_federated),
}


def run(args: argparse.Namespace) -> int:
    """Run the suite(s) and report."""
    top = get_suite(args.suite)
    if args.scale == "gpu" and top.hardware != "gpu":
        if top.gpu_scale is None:
            scaled = ", ".join(s.name for s in SUITES.values() if s.gpu_scale) or "none"
            raise ConfigError(
                f"suite {top.name!r} has no GPU configuration; --scale=gpu applies to: {scaled}"
            )
        top = get_suite(top.gpu_scale)
    parts = [get_suite(name) for name in top.parts] if top.parts else [top]
    root = Path(args.out) if args.out else Path("runs")
    seeds = args.seeds if args.seeds is not None else top.seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if top.runner in _OWN_RUNNERS:
        why, run_suite = _OWN_RUNNERS[top.runner]
        if launched_by_torchrun():
            raise ConfigError(
                f"the {top.name} suite {why}: run it without torchrun (adabatch compare {top.name})"
            )
        return run_suite(args, seeds, root)
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
        if rank() != 0:
            continue  # rank 0 writes the report
        runs = [r for r in find_runs([root / part.name]) if r.method in {m.label for m in methods}]
        print()
        print(write_report(runs, root / part.name / "report"))
    if failed:
        print(f"adabatch: not completed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
