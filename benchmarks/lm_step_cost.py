"""What one step of the lm suite's GPT costs at each batch size, and the wall-clock it models.

Sequential runs on a shared 2-core machine drift: the same configuration took 19 s and 28 s
an hour apart. This benchmark measures instead, side by side in one process:

1. the median time of one optimizer step (forward, backward, AdamW) at batches of 1,024 to
   16,384 tokens, plain and with the per-sample statistics the adaptive policies read (a
   *measured* step: the Trainer's path, one `GradStatsTracker` for the run, paused on plain
   steps), the sizes interleaved round by round so that drift hits all alike;
2. with ``--runs`` (a finished ``adabatch compare lm``), each method's *modelled* time to the
   comparison's target: Σ over its steps up to the target of the cost of that step at its
   batch (interpolated linearly in tokens between measured sizes): a measured step where the
   policy's cadence measures (the noise scale on every step, the norm test on one in
   ``interval``, DiveBatch on ``window_steps`` of every ``every_steps``), a plain one
   elsewhere. Steps and batch sizes are the runs' own (they do not depend on the machine);
   only the clock is replaced.

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
from adabatch.experiments.config import Config
from adabatch.experiments.curves import by_point
from adabatch.experiments.run_dirs import find_runs
from adabatch.experiments.suites import SUITES
from adabatch.experiments.units import in_sequences
from adabatch.models import next_token_loss
from adabatch.policies import make_policy
from adabatch.stats import GradStatsTracker

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

    # The Trainer's path: one tracker for the run, paused on the steps it does not measure.
    tracker = GradStatsTracker(model, loss_reduction="mean")

    def plain(n: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with tracker.paused():
            next_token_loss(model(x[:n]), y[:n]).backward()
        optimizer.step()

    def measured(n: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        tracker.reset()
        next_token_loss(model(x[:n]), y[:n]).backward()
        tracker.pop()
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


def _policy(run_config: dict, tokens_per_sample: int):
    """The run's policy, rebuilt from its config (for its cadence and its cap)."""
    config = in_sequences(Config.from_dict(run_config), tokens_per_sample)
    options = dict(config.policy.options)
    if config.policy.name == "seesaw":
        options["thresholds"] = ((0, config.policy.batch_size),)  # reads no statistics
    return make_policy(
        config.policy.name, batch_size=config.policy.batch_size, dataset_size=10**9, **options
    )


def _step_sizes(run, last_step: int, final_tokens: int) -> list[int]:
    """The batch (tokens) of each step 1 … ``last_step``, from the run's records.

    Step records come every ``log_every`` steps and at every decision, and the batch changes
    only at decisions, so the steps since the previous record ran at the record's batch; the
    steps after the last record up to ``last_step`` at ``final_tokens`` (the evaluation's).
    """
    sizes: list[int] = []
    for record in run.steps:
        if record["step"] > last_step:
            break
        sizes += [record["batch_tokens"]] * (record["step"] - len(sizes))
    return sizes + [final_tokens] * (last_step - len(sizes))


def modelled(runs_dir: Path, costs: dict[str, dict[int, float]]) -> list[dict]:
    """Each method's modelled seconds to the comparison's target (see the module docstring).

    A step costs a plain step at its batch, or a measured one where the policy's cadence
    measures it (`Cadence.measures`, and not at the cap unless ``measure_at_cap``).
    """
    comparison = compare(find_runs([runs_dir]))
    rows = []
    for summary in comparison.methods:
        reach = summary.to_target
        seconds, measured_share = [], []
        for run in comparison.runs[summary.method]:
            if reach is None:
                break
            at_target = by_point(run, comparison.axis)[reach.point]
            t = run.config["config"]["data"]["options"]["seq_len"]
            policy = _policy(run.config["config"], t)
            cadence = policy.cadence
            sizes = _step_sizes(run, at_target["step"], at_target["batch_tokens"])
            total, measured = 0.0, 0
            for index, tokens in enumerate(sizes):  # index: steps completed before it
                wants = cadence.measuring(tokens // t, policy.cap) and cadence.measures(index)
                measured += wants
                total += interpolate(costs["measured" if wants else "plain"], tokens)
            seconds.append(total)
            measured_share.append(measured / max(len(sizes), 1))
        rows.append(
            {
                "method": summary.method,
                "steps_to_target": None if reach is None else reach.steps,
                "tokens_to_target": None if reach is None else reach.tokens,
                "measured_seconds_to_target": None if reach is None else reach.time,
                "modelled_seconds_to_target": statistics.mean(seconds) if seconds else None,
                "measured_steps_share": statistics.mean(measured_share) if seconds else None,
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
        head = f"{'method':<16} {'steps':>6} {'tokens':>8} {'run s':>6} {'model s':>8} {'×':>6}"
        print(head + f" {'measured':>9}")
        for r in rows:
            if r["modelled_seconds_to_target"] is None:
                print(f"{r['method']:<16} {'—':>6} {'—':>8} {'—':>6} {'—':>8} {'—':>6}")
                continue
            print(
                f"{r['method']:<16} {r['steps_to_target']:>6.0f} "
                f"{r['tokens_to_target'] / 1e3:>7.0f}k {r['measured_seconds_to_target']:>6.1f} "
                f"{r['modelled_seconds_to_target']:>8.1f} {r['modelled_speedup']:>5.2f}× "
                f"{100 * r['measured_steps_share']:>8.0f}%"
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
