"""Reading saved run directories: ``config.json``, ``metrics.jsonl`` and ``summary.json``.

A run directory is what one training run writes (see the trainer for the writing side):

- ``config.json``: the run's configuration; this module needs ``method``, ``seed`` and the
  optional ``report`` block (``methods``, ``baselines``, ``metric``, ``axis``, ``target``,
  ``title``).
- ``metrics.jsonl``: one JSON object per line, ``{"kind": "step", ...}``,
  ``{"kind": "epoch", ...}`` or ``{"kind": "eval", ...}``; other kinds are ignored, and so is
  a truncated last line (a run killed while writing).
- ``summary.json``: written when the run ends; its ``status`` is ``"completed"``,
  ``"diverged"`` or ``"interrupted"``. A run without one is ``"incomplete"``.

Nothing here trains or computes metrics: see `adabatch.experiments.comparison` for those.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._json import read_json
from ..errors import ReportError

__all__ = ["INCOMPLETE", "Run", "find_runs", "load_run"]

#: The status of a run whose ``summary.json`` is missing (still running, or killed).
INCOMPLETE = "incomplete"

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Run:
    """One run directory, as read from disk.

    Attributes:
        path: The run directory.
        config: The parsed ``config.json``.
        steps: The ``"step"`` records of ``metrics.jsonl``, in order of ``step``.
        epochs: The ``"epoch"`` records of ``metrics.jsonl``, in order of ``epoch`` (record 0 is
            the evaluation before training).
        evals: The ``"eval"`` records (an evaluation every N training samples), in order of
            ``evaluation``.
        status: ``summary.json``'s status (``"completed"``, ``"diverged"``, ``"interrupted"``),
            or ``"incomplete"`` when there is no ``summary.json``.
    """

    path: Path
    config: dict[str, Any]
    steps: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    status: str
    evals: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def method(self) -> str:
        """The method label of the run (``config["method"]``)."""
        return self.config["method"]

    @property
    def seed(self) -> int:
        """The seed of the run (``config["seed"]``)."""
        return self.config["seed"]

    @property
    def report(self) -> dict[str, Any]:
        """The ``report`` block of the configuration (empty when absent)."""
        return self.config.get("report") or {}


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ReportError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    config = read_json(path, ReportError)
    if not isinstance(config, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(config).__name__}")
    method = config.get("method")
    if not isinstance(method, str) or not method:
        raise ReportError(f"{path}: 'method' must be a non-empty string, got {method!r}")
    seed = config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ReportError(f"{path}: 'seed' must be an integer, got {seed!r}")
    report = config.get("report")
    if report is not None and not isinstance(report, dict):
        raise ReportError(f"{path}: 'report' must be a JSON object, got {report!r}")
    return config


def _keep_monotonic(records: list[dict[str, Any]], record: dict[str, Any], counter: str) -> None:
    """Append ``record``, first dropping the records it rewinds (a run resumed from a checkpoint).

    When ``record[counter]`` is not past the last kept record's, the run restarted from an
    earlier point: the records from that point on are replaced by the new ones.
    """
    value = record.get(counter)
    if isinstance(value, (int, float)):
        while records and isinstance(records[-1].get(counter), (int, float)):
            if records[-1][counter] < value:
                break
            records.pop()
    records.append(record)


Records = list[dict[str, Any]]


def _read_metrics(run_dir: Path) -> tuple[Records, Records, Records]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return [], [], []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    steps: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # the last line, cut short by a killed run
                break
            raise ReportError(f"{path}:{number}: not a JSON line: {exc}") from exc
        if not isinstance(record, dict):
            raise ReportError(f"{path}:{number}: expected a JSON object, got {record!r}")
        kind = record.get("kind")
        if kind == "step":
            _keep_monotonic(steps, record, "step")
        elif kind == "epoch":
            _keep_monotonic(epochs, record, "epoch")
        elif kind == "eval":
            _keep_monotonic(evals, record, "evaluation")
        # other kinds: written by a newer trainer, not needed here
    return steps, epochs, evals


def _read_status(run_dir: Path) -> str:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return INCOMPLETE
    try:
        summary = read_json(path, ReportError)
    except ReportError as exc:  # being written, or cut short: the run did not finish cleanly
        warnings.warn(f"{exc}; treating the run as {INCOMPLETE}", stacklevel=3)
        return INCOMPLETE
    status = summary.get("status") if isinstance(summary, dict) else None
    return status if isinstance(status, str) and status else INCOMPLETE


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read the run directory ``path``.

    Args:
        path: A directory holding at least ``config.json``.

    Returns:
        The run, with its step, epoch and eval records (none when ``metrics.jsonl`` is missing) and
        its status (``"incomplete"`` when ``summary.json`` is missing).

    Raises:
        ReportError: ``config.json`` is missing, unreadable or lacks ``method``/``seed``, or a
            line of ``metrics.jsonl`` other than the last is not a JSON object.
    """
    run_dir = Path(path)
    config = _read_config(run_dir)
    steps, epochs, evals = _read_metrics(run_dir)
    return Run(
        path=run_dir,
        config=config,
        steps=steps,
        epochs=epochs,
        status=_read_status(run_dir),
        evals=evals,
    )


def _run_dirs_under(root: Path) -> list[Path]:
    """The run directories at or below ``root``; the search does not enter a run directory."""
    if (root / CONFIG_FILE).is_file():
        return [root]
    found = []
    for directory, subdirs, files in os.walk(root):
        if CONFIG_FILE in files:
            found.append(Path(directory))
            subdirs.clear()
        else:
            subdirs.sort()
    return found


def find_runs(paths: Iterable[str | os.PathLike[str]]) -> list[Run]:
    """Load every run directory given, or found (recursively) below a directory given.

    Args:
        paths: Run directories (holding ``config.json``) or directories searched recursively for
            run directories.

    Returns:
        The runs, each once, sorted by method, seed and path.

    Raises:
        ReportError: A path does not exist, is not a directory, or holds no run directory; or a
            run directory cannot be read (see `load_run`).
    """
    run_dirs: dict[Path, Path] = {}
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ReportError(f"{root}: no such directory")
        if not root.is_dir():
            raise ReportError(f"{root}: not a directory")
        found = _run_dirs_under(root)
        if not found:
            raise ReportError(f"{root}: no run directory (with a {CONFIG_FILE}) found")
        for run_dir in found:
            run_dirs.setdefault(run_dir.resolve(), run_dir)
    runs = [load_run(run_dir) for run_dir in run_dirs.values()]
    return sorted(runs, key=lambda run: (run.method, run.seed, str(run.path)))
