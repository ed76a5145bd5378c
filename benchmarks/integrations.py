"""Fixed against adaptive batch inside Lightning and Hugging Face's Trainer, 3 seeds each.

Each row: one training run of the integration's example (``examples/lightning_adaptive.py``:
an MLP on scikit-learn's digits, SGD; ``examples/hf_trainer_adaptive.py``: a tiny GPT-2 on a
Markov-chain text, AdamW), with a fixed batch B₀ (the trainer alone, and through the callback
with a constant policy: the callback's own cost) or with the norm-test callback starting from
B₀. Reported: training seconds (the trainer's fit/train call), optimizer steps, final batch,
and the final metric (validation accuracy; held-out loss). Prints a table, writes JSON.

    python benchmarks/integrations.py [--seeds 3] [--out benchmarks/results/integrations.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
from datetime import date
from pathlib import Path

import torch

EXAMPLES = Path(__file__).parent.parent / "examples"
# None: the trainer alone; "constant": the same fixed batch through the callback (its cost);
# "norm-test": the adaptive batch.
POLICIES = (None, "constant", "norm-test")
LABELS = {None: "fixed B0", "constant": "fixed B0, via callback", "norm-test": "norm test"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/integrations.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cases = {
        "lightning": (_load("lightning_adaptive"), "val_acc", {"epochs": 10}),
        "huggingface": (_load("hf_trainer_adaptive"), "eval_loss", {"epochs": 3}),
    }
    rows = []
    for name, (example, metric, options) in cases.items():
        for seed in range(args.seeds):
            for policy in POLICIES:  # interleaved: the machine's drift hits all alike
                result = example.main(seed=seed, policy=policy, **options)
                rows.append({"trainer": name, "policy": policy or "none", "seed": seed,
                             "metric": metric, **result})  # fmt: skip
    print(f"{'trainer':<12} {'run':<24} {'seconds':>8} {'steps':>6} {'final B':>8} metric")
    summary = []
    for name, (_, metric, _) in cases.items():
        for policy in POLICIES:
            label = LABELS[policy]
            group = [r for r in rows if r["trainer"] == name and r["policy"] == (policy or "none")]
            values = [r[metric] for r in group]
            entry = {
                "trainer": name, "run": label,
                "seconds_median": statistics.median(r["seconds"] for r in group),
                "steps_median": statistics.median(r["steps"] for r in group),
                "final_batch_median": statistics.median(r["final_batch"] for r in group),
                f"{metric}_mean": statistics.fmean(values),
                f"{metric}_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            }  # fmt: skip
            summary.append(entry)
            print(
                f"{name:<12} {label:<24} {entry['seconds_median']:>8.2f} "
                f"{entry['steps_median']:>6.0f} {entry['final_batch_median']:>8.0f} "
                f"{metric} {entry[f'{metric}_mean']:.4f} ± {entry[f'{metric}_sd']:.4f}"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": date.today().isoformat(), "machine": platform.platform(),
            "torch": torch.__version__, "seeds": args.seeds}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
