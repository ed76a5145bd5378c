"""``adabatch compare federated``: constant against time-evolving client batches, over seeds.

Every method is a `FederatedConfig` on the same Dirichlet split of MNIST (the split, the
participants and the clients' data order follow the seed, so the methods of one seed see the
same clients in the same rounds). Reported: final test accuracy (mean ± SEM over seeds), and
the first evaluation round at which the seed-averaged accuracy reaches the target, with the
local samples and training seconds spent by then; a plot of accuracy against rounds and
samples and of the participants' mean batch against rounds.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from .._over_seeds import mean_sem
from ..experiments.bundles import build_data
from ..experiments.config import DataConfig
from ..models import build_model
from .federated import FederatedConfig, TimeEvolvingBatch, run_federated

__all__ = ["METHODS", "run_comparison"]

#: label → what differs from the base configuration.
METHODS: dict[str, dict[str, Any]] = {
    "constant-16": {"batch_size": 16},
    "constant-128": {"batch_size": 128},
    "time-evolving": {
        "batch_size": 16,
        "rule": "time-evolving",
        "evolving": TimeEvolvingBatch(eta=1.0, smoothing=0.5, max_batch_size=512),
    },
}


def _reach(curves: list[list[dict[str, Any]]], target: float) -> dict[str, float] | None:
    """The first evaluated round whose mean accuracy over seeds is ≥ target, with its costs."""
    evaluated = [r["round"] for r in curves[0] if "test_accuracy" in r]
    for point in evaluated:
        at = [next(r for r in run if r["round"] == point) for run in curves]
        if statistics.mean(r["test_accuracy"] for r in at) >= target:
            return {
                "round": point,
                "samples": statistics.mean(r["samples"] for r in at),
                "time": statistics.mean(r["time"] for r in at),
            }
    return None


def run_comparison(
    out: str | Path,
    *,
    seeds: int = 3,
    rounds: int = 60,
    clients: int = 10,
    per_round: int = 5,
    local_steps: int = 10,
    alpha: float = 0.5,
    target: float = 91.0,
    root: str | None = None,
) -> str:
    """Run every method of `METHODS` for ``seeds`` seeds; write the report; return its table."""
    data = build_data(DataConfig(name="mnist", root=root), seed=0)

    def make_model() -> torch.nn.Module:
        return build_model("mlp", in_shape=data.in_shape, num_classes=10, hidden=(200,))

    base = FederatedConfig(
        clients=clients, per_round=per_round, local_steps=local_steps, rounds=rounds,
        alpha=alpha, eval_every=5,
    )  # fmt: skip
    results: dict[str, list[list[dict[str, Any]]]] = {}
    for label, changes in METHODS.items():
        results[label] = [
            run_federated(
                dataclasses.replace(base, seed=seed, **changes), data.train, data.test, make_model
            )
            for seed in range(seeds)
        ]
    rows = []
    for label, curves in results.items():
        finals = [run[-1]["test_accuracy"] for run in curves]
        mean, sem = mean_sem(finals)
        reach = _reach(curves, target)
        rows.append(
            {
                "method": label,
                "final_accuracy": mean,
                "final_sem": sem,
                "final_mean_batch": statistics.mean(run[-1]["mean_batch"] for run in curves),
                "samples": statistics.mean(run[-1]["samples"] for run in curves),
                "time": statistics.mean(run[-1]["time"] for run in curves),
                "to_target": reach,
            }
        )
    text = _table(rows, base, seeds, target)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text + "\n", encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps(
            {
                "config": _plain(base),
                "seeds": seeds,
                "target": target,
                "methods": rows,
                "runs": results,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    _plot(results, out / "federated.png", target)
    return text


def _plain(config: FederatedConfig) -> dict[str, Any]:
    return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
            for k, v in dataclasses.asdict(config).items()}  # fmt: skip


def _table(rows: list[dict[str, Any]], base: FederatedConfig, seeds: int, target: float) -> str:
    lines = [
        f"federated: FedAvg on MNIST, {base.clients} clients (Dirichlet α = {base.alpha}), "
        f"{base.per_round} per round, {base.local_steps} local steps, {base.rounds} rounds, "
        f"{seeds} seeds; target {target:g} %",
        "",
        "| method | final acc (%) | final mean batch | rounds→target | samples→target | "
        "time→target (s) | samples (all) | time (all, s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reach = r["to_target"]
        lines.append(
            f"| {r['method']} | {r['final_accuracy']:.2f} ± {r['final_sem']:.2f} | "
            f"{r['final_mean_batch']:.0f} | "
            + (
                f"{reach['round']} | {reach['samples'] / 1e3:.0f}k | {reach['time']:.1f} | "
                if reach
                else "— | — | — | "
            )
            + f"{r['samples'] / 1e3:.0f}k | {r['time']:.1f} |"
        )
    return "\n".join(lines)


def _plot(results: dict[str, list[list[dict[str, Any]]]], path: Path, target: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for label, curves in results.items():
        points = [r["round"] for r in curves[0] if "test_accuracy" in r]
        acc = [
            statistics.mean(next(r for r in run if r["round"] == p)["test_accuracy"]
                            for run in curves)
            for p in points
        ]  # fmt: skip
        samples = [
            statistics.mean(next(r for r in run if r["round"] == p)["samples"] for run in curves)
            for p in points
        ]
        axes[0].plot(points, acc, label=label)
        axes[1].plot(samples, acc, label=label)
        rounds = [r["round"] for r in curves[0]][1:]
        batch = [
            statistics.mean(run[i]["mean_batch"] for run in curves)
            for i in range(1, len(curves[0]))
        ]
        axes[2].plot(rounds, batch, label=label)
    for ax, xlabel in zip(axes[:2], ("round", "local samples (all clients)"), strict=True):
        ax.axhline(target, color="0.4", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0.0, target - 15), 100)
    axes[2].set_xlabel("round")
    axes[2].set_ylabel("participants' mean batch")
    axes[2].set_yscale("log", base=2)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
    fig.suptitle("federated: constant and time-evolving client batches (mean over seeds)")
    fig.savefig(path, dpi=110)
