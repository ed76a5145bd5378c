"""Where the statistics' extra time goes: a step with S2 + P2 against a plain step, by operator.

For each workload of `stats_overhead.py` (same models, batches and steps), both steps run
``--steps`` times under ``torch.profiler`` (CPU activities). The extra time of the statistics
step is split into:

- the operators it runs that the plain step does not, or runs for longer (self CPU time per
  ``aten::`` operator, summed over the steps; the largest differences are listed);
- the rest of the wall-clock difference: Python and dispatch around those operators (the
  hooks' per-layer Python, the autograd nodes the tracker adds), which no operator accounts
  for.

Run: ``python benchmarks/stats_profile.py [--steps 20] [--quick]``; prints a table per
workload and writes ``benchmarks/results/stats_profile.json``. The figures are per step, in
milliseconds; profiling slows both steps alike, so ratios are meaningful, absolute times a
little high.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine
from stats_overhead import WORKLOADS, hooks_step, plain_step


def _profile(step, steps: int) -> tuple[float, dict[str, float]]:
    """(median wall ms per step, self CPU ms per step by operator) over ``steps`` steps."""
    for _ in range(3):
        step()
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            start = time.perf_counter()
            step()
            walls.append(1e3 * (time.perf_counter() - start))
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_op[event.key] += event.self_cpu_time_total / 1e3 / steps
    return statistics.median(walls), dict(by_op)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the b = 128 workloads only")
    parser.add_argument("--out", default="benchmarks/results/stats_profile.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    workloads = [w for w in WORKLOADS if not args.quick or w.batch == 128]
    results = []
    for workload in workloads:
        g = torch.Generator().manual_seed(0)
        x, y = workload.make_batch(workload.batch, g)
        torch.manual_seed(0)
        plain_wall, plain_ops = _profile(plain_step(workload.make_model(), x, y), args.steps)
        torch.manual_seed(0)
        stats_step = hooks_step(inner=True, coords=False)(workload.make_model(), x, y)
        stats_wall, stats_ops = _profile(stats_step, args.steps)
        extra_ops = {
            op: stats_ops.get(op, 0.0) - plain_ops.get(op, 0.0)
            for op in set(stats_ops) | set(plain_ops)
        }
        op_total = sum(v for v in extra_ops.values())
        top = sorted(extra_ops.items(), key=lambda kv: -kv[1])[:8]
        extra = stats_wall - plain_wall
        row = {
            "workload": f"{workload.name}, b = {workload.batch}",
            "plain_ms": plain_wall,
            "stats_ms": stats_wall,
            "ratio": stats_wall / plain_wall,
            "extra_ms": extra,
            "extra_in_operators_ms": op_total,
            "extra_outside_operators_ms": extra - op_total,
            "top_operators_ms": dict(top),
        }
        results.append(row)
        print(
            f"\n{row['workload']}: plain {plain_wall:.2f} ms, S2+P2 {stats_wall:.2f} ms "
            f"({row['ratio']:.2f}×); extra {extra:.2f} ms = operators {op_total:.2f} + "
            f"Python/dispatch {extra - op_total:.2f}"
        )
        for op, ms in top:
            print(f"    {op:<40} {ms:+7.3f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "steps": args.steps, "rows": results},
                              indent=2) + "\n")  # fmt: skip
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
