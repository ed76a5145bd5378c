"""What one step of the lm suite's GPT costs at each batch size, and the wall-clock it models.

Sequential runs on a shared 2-core machine drift: the same configuration took 19 s and 28 s
an hour apart. This benchmark measures instead, side by side in one process:

1. the median time of one optimizer step (forward, backward, AdamW) at batches of 1,024 to
   16,384 tokens, plain and with the per-sample statistics the adaptive policies read (a
   *measured* step), the sizes interleaved round by round so that drift hits all alike;
2. with ``--runs`` (a finished ``adabatch compare lm``), each method's *modelled* time to the
   comparison's target: Σ over its steps up to the target of the measured cost at that step's
   batch (interpolated linearly in tokens between measured sizes), plus the statistics' extra
   cost on one step in ``policy.interval``. Steps and batch sizes are the runs' own (they do
   not depend on the machine); only the clock is replaced.

    python benchmarks/lm_step_cost.py [--runs runs/lm] [--repeats 15]
        [--out benchmarks/results/lm_step_cost.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from adabatch.experiments.build import build
from adabatch.experiments.comparison import compare
from adabatch.experiments.curves import by_point
from adabatch.experiments.run_dirs import find_runs
from adabatch.experiments.suites import SUITES
from adabatch.models import next_token_loss
from adabatch.stats import compute_stats

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

SIZES = (1024, 2048, 4096, 8192, 16384)  # tokens


def step_costs(repeats: int) -> dict[str, dict[int, float]]:
    """Median seconds of one plain and one measured step at each size in `SIZES`."""
    config = SUITES["lm"].base
    built = build(dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1)))
    model, optimizer = built.model, built.optimizer
    t = built.data.tokens_per_sample
    x, y = built.data.train.tensors

    def plain(n: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        next_token_loss(model(x[:n]), y[:n]).backward()
        optimizer.step()

    def measured(n: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        compute_stats(model, next_token_loss, x[:n], y[:n], engine="hooks")
        optimizer.step()

    kinds = {"plain": plain, "measured": measured}
    times: dict[str, dict[int, list[float]]] = {k: {s: [] for s in SIZES} for k in kinds}
    for round_ in range(repeats + 2):  # two warm-up rounds
        for size in SIZES:
            for kind, fn in kinds.items():
                start = time.perf_counter()
                fn(size // t)
                if round_ >= 2:
                    times[kind][size].append(time.perf_counter() - start)
    return {k: {s: statistics.median(v) for s, v in d.items()} for k, d in times.items()}


def interpolate(costs: dict[int, float], tokens: float) -> float:
    """The cost of a step of ``tokens``, linear between the measured sizes (and beyond)."""
    sizes = sorted(costs)
    lo = max([s for s in sizes if s <= tokens], default=sizes[0])
    hi = min([s for s in sizes if s >= tokens], default=sizes[-1])
    if lo == hi:
        return costs[lo] * tokens / lo
    return costs[lo] + (costs[hi] - costs[lo]) * (tokens - lo) / (hi - lo)


def modelled(runs_dir: Path, costs: dict[str, dict[int, float]]) -> list[dict]:
    """Each method's modelled seconds to the comparison's target (see the module docstring)."""
    comparison = compare(find_runs([runs_dir]))
    rows = []
    for summary in comparison.methods:
        reach = summary.to_target
        seconds = []
        for run in comparison.runs[summary.method]:
            if reach is None:
                break
            last_step = by_point(run, comparison.axis)[reach.point]["step"]
            interval = (run.config.get("policy", {}).get("options") or {}).get("interval", 10)
            reads = run.config.get("policy", {}).get("name") not in (
                "constant",
                "sample-schedule",
                "seesaw",
            )
            total, previous = 0.0, 0
            for record in run.steps:
                if record["step"] > last_step:
                    break
                count = record["step"] - previous
                per_step = interpolate(costs["plain"], record["batch_tokens"])
                total += count * per_step
                if reads:
                    extra = interpolate(costs["measured"], record["batch_tokens"]) - per_step
                    total += count * extra / interval
                previous = record["step"]
            seconds.append(total)
        rows.append(
            {
                "method": summary.method,
                "steps_to_target": None if reach is None else reach.steps,
                "tokens_to_target": None if reach is None else reach.tokens,
                "measured_seconds_to_target": None if reach is None else reach.time,
                "modelled_seconds_to_target": statistics.mean(seconds) if seconds else None,
                "final_loss": summary.final_mean,
            }
        )
    base = rows[0]["modelled_seconds_to_target"]
    for row in rows:
        own = row["modelled_seconds_to_target"]
        row["modelled_speedup"] = None if own is None or base is None else base / own
    return [{"target": comparison.target, **row} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="a finished adabatch compare lm (its lm/)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/lm_step_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    costs = step_costs(args.repeats)
    print(f"{'tokens':>7}  {'plain ms':>9}  {'measured ms':>12}  {'ktok/s':>7}  {'stats ×':>7}")
    for size in SIZES:
        plain, measured = costs["plain"][size], costs["measured"][size]
        print(
            f"{size:>7}  {1e3 * plain:>9.1f}  {1e3 * measured:>12.1f}  "
            f"{size / plain / 1e3:>7.1f}  {measured / plain:>7.2f}"
        )
    rows = modelled(args.runs, costs) if args.runs else []
    if rows:
        print(f"\ntarget validation loss {rows[0]['target']:.3f}")
        print(f"{'method':<16} {'steps':>6} {'tokens':>8} {'run s':>6} {'model s':>8} {'×':>6}")
        for r in rows:
            if r["modelled_seconds_to_target"] is None:
                print(f"{r['method']:<16} {'—':>6} {'—':>8} {'—':>6} {'—':>8} {'—':>6}")
                continue
            print(
                f"{r['method']:<16} {r['steps_to_target']:>6.0f} "
                f"{r['tokens_to_target'] / 1e3:>7.0f}k {r['measured_seconds_to_target']:>6.1f} "
                f"{r['modelled_seconds_to_target']:>8.1f} {r['modelled_speedup']:>5.2f}×"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "repeats": args.repeats,
        "step_seconds": {k: {str(s): v for s, v in d.items()} for k, d in costs.items()},
        "modelled": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
