"""Every registered policy on one synthetic logistic regression: batch trajectories and why.

    python benchmarks/policy_trajectories.py            # 6 epochs per policy (≈1 minute)
    python benchmarks/policy_trajectories.py --quick    # 3 epochs

Data: `synthetic_logistic` (n 8192, d 64, 10 % label flips, inputs scaled to ‖x‖ ≈ 1).
Model: logistic regression (``nn.Linear(64, 2)``, cross-entropy), SGD with lr 2 and no LR
coupling, so that the trajectories differ by the policies alone. Each policy runs in the
README's loop — `AdaptiveLoader`, `BatchSizeScheduler`, a hooks-engine `GradStatsTracker`
asked only for what the policy reads — and the script prints, per policy, the batch size at
the end of each epoch, the optimizer steps, the full-data loss, and every decision that
changed the batch with the statistic behind it. JSON goes to
``benchmarks/results/policy_trajectories.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from _machine import machine
from adabatch import BatchSizeScheduler
from adabatch.data import AdaptiveLoader
from adabatch.datasets.synthetic import synthetic_logistic
from adabatch.policies import POLICIES, make_policy
from adabatch.stats import GradStatsTracker

N, D = 8192, 64

# Each policy's configuration for this problem (b₀ 16 for the tests, 64 for the schedules).
CONFIGS = {
    "constant": dict(batch_size=64),
    "schedule": dict(batch_size=64, factor=2, every=1),
    "divebatch": dict(batch_size=64, delta=0.1, every=1, max_batch_size=N),
    "norm-test": dict(batch_size=16, eta=0.5, interval=4),
    "inner-product": dict(batch_size=16, theta=0.5, interval=4),
    "orthogonality": dict(batch_size=16, nu=0.5, interval=4),
    "augmented-inner-product": dict(batch_size=16, epsilon=0.5, interval=4),
    "coordinate-norm-test": dict(batch_size=16, eta=0.5, interval=4),
    "noise-scale": dict(batch_size=16, smoothing=0.9, interval=20),
}


def full_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def run(name: str, epochs: int, seed: int = 0) -> dict:
    data = synthetic_logistic(N, D, noise=0.1, seed=seed, scale=1 / math.sqrt(D))
    x, y = data.inputs, data.targets
    torch.manual_seed(seed)
    model = nn.Linear(D, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=2.0)
    policy = make_policy(name, **(CONFIGS[name] | {"dataset_size": N}))
    loader = AdaptiveLoader(data, policy.batch_size, seed=seed)
    scheduler = BatchSizeScheduler(policy, loader, optimizer)
    tracker = GradStatsTracker(model, **scheduler.tracker_options)
    loss_fn = nn.CrossEntropyLoss()
    epochs_out = []
    measured = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        steps_before = scheduler.step_count
        for inputs, targets in loader:
            optimizer.zero_grad()
            measured += scheduler.wants_stats
            with scheduler.measure(tracker):
                loss_fn(model(inputs), targets).backward()
            optimizer.step()
            scheduler.step()
        scheduler.step_epoch()
        epochs_out.append(
            {
                "epoch": epoch,
                "batch_size": scheduler.batch_size,
                "steps": scheduler.step_count - steps_before,
                "loss": full_loss(model, x, y),
            }
        )
    tracker.remove()
    return {
        "policy": name,
        "config": policy.config(),
        "seconds": time.perf_counter() - start,
        "steps": scheduler.step_count,
        "measured_steps": measured,
        "epochs": epochs_out,
        "decisions": [dataclasses.asdict(d) for d in scheduler.decisions],
    }


def fmt(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.4g}")


def report(results: list[dict]) -> None:
    print("\n| policy | batch at each epoch end | steps | measured | loss | last statistic |")
    print("|---|---|---|---|---|---|")
    for r in results:
        sizes = " → ".join(str(e["batch_size"]) for e in r["epochs"])
        last = r["decisions"][-1] if r["decisions"] else None
        stat = f"{last['statistic']} = {fmt(last['value'])}" if last else "—"
        print(
            f"| {r['policy']} | {sizes} | {r['steps']} | {r['measured_steps']} | "
            f"{r['epochs'][-1]['loss']:.4f} | {stat} |"
        )
    print("\nDecisions that changed the batch (epoch/step: old → new, statistic, T or δNΔ):")
    for r in results:
        rows = r["decisions"]
        shown = rows if len(rows) <= 8 else [*rows[:4], None, *rows[-3:]]
        print(f"  {r['policy']}:")
        for d in shown:
            if d is None:
                print(f"    … {len(rows) - 7} more")
                continue
            where = f"e{d['epoch']}" + ("" if d["step"] is None else f"/s{d['step']}")
            print(
                f"    {where}: {d['old_batch_size']} → {d['new_batch_size']}  "
                f"{d['statistic']} {fmt(d['value'])}  suggested {fmt(d['suggested'])}"
                + ("" if d["lr_factor"] == 1.0 else f"  lr ×{d['lr_factor']:.3g}")
            )
        if not rows:
            print("    (none)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs instead of 6")
    parser.add_argument("--out", default="benchmarks/results/policy_trajectories.json")
    args = parser.parse_args(argv)
    if set(CONFIGS) != set(POLICIES):
        raise SystemExit(f"CONFIGS must cover every registered policy: {sorted(POLICIES)}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    epochs = 3 if args.quick else 6
    info = machine()
    results = [run(name, epochs) for name in POLICIES]
    report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "epochs": epochs, "runs": results}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
