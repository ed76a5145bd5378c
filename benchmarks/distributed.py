"""One process against two torchrun ranks, and what the distributed statistics cost.

    python benchmarks/distributed.py                 # both parts (≈6 minutes on 2 cores)
    python benchmarks/distributed.py --epochs 12     # the quick suite's full length
    python benchmarks/distributed.py --part runs     # the quick suite, 1 process vs 2 ranks
    python benchmarks/distributed.py --part collectives
    python benchmarks/distributed.py --device cuda   # the same on GPUs (NCCL), where lent

Part "runs": every method of the quick suite (``adabatch run quick/METHOD --epochs=E``, 2 of
its 12 epochs by default), once by one
process and once by ``torchrun --nproc_per_node=2`` (gloo, DDP), in turn, ``--rounds`` times,
on the same cores either way (one process with all of them, or each rank its share: one thread
per rank on 2 cores). Reported: training samples per second (the summary's samples over its
training time, evaluation excluded), the medians over rounds and the median of the paired
ratios, and whether the two runs took the same steps to the same final batch size.

Part "collectives": inside 2 torchrun ranks, for the quick suite's MLP and the MNIST MLP
784-512-10 at b = 128 (64 per rank), the median time of a plain DDP step (forward, backward
with its gradient all-reduce, SGD step), of a measured step (the same with the tracker on) and
of the extra collectives of a measured step: `all_reduce_stats` (Σgᵢ, S2 and P2: one
all-reduce per dtype) and the decision check (`check_agreement`), plus the per-step stop-flag
all-reduce every step pays.

Results: a table on stdout and ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import machine
from _timing import median_ms

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("sgd-small", "sgd-large", "adabatch", "divebatch", "norm-test")


def _run(method: str, out: Path, ranks: int, epochs: int) -> dict:
    args = ["adabatch", "run", f"quick/{method}", f"--out={out}", "--no-progress",
            "--overwrite", "--train.tensorboard=false", f"--epochs={epochs}"]  # fmt: skip
    # The same cores either way: one process with all of them, or each rank its share.
    threads = max(1, (os.cpu_count() or 1) // ranks)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if ranks == 1:
        cmd = [sys.executable, "-m", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", "-m", *args]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads((out / "summary.json").read_text())


def runs_part(rounds: int, epochs: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            per: dict[int, list[dict]] = {1: [], 2: []}
            for r in range(rounds):
                order = (1, 2) if r % 2 == 0 else (2, 1)
                for ranks in order:
                    per[ranks].append(_run(method, Path(tmp) / f"{method}-{ranks}", ranks, epochs))
            rate = {k: [s["samples"] / s["train_time"] for s in v] for k, v in per.items()}
            ratios = [b / a for a, b in zip(rate[1], rate[2], strict=True)]
            one, two = per[1][0], per[2][0]
            rows.append(
                {
                    "method": method,
                    "samples_per_s_1": statistics.median(rate[1]),
                    "samples_per_s_2": statistics.median(rate[2]),
                    "ratio_2_over_1": statistics.median(ratios),
                    "same_steps": one["steps"] == two["steps"],
                    "same_final_batch": one["final_batch_size"] == two["final_batch_size"],
                    "steps": one["steps"],
                    "final_batch_size": one["final_batch_size"],
                    "accuracy_1": one["final_test_accuracy"],
                    "accuracy_2": two["final_test_accuracy"],
                }
            )
            print(
                f"{method:10s}  1 process {rows[-1]['samples_per_s_1']:9.0f}/s   2 ranks "
                f"{rows[-1]['samples_per_s_2']:9.0f}/s   ×{rows[-1]['ratio_2_over_1']:.2f}   "
                f"same steps {rows[-1]['same_steps']}, same final batch "
                f"{rows[-1]['same_final_batch']}",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------- inside torchrun
def _measure(make, env, reps: int) -> dict:
    """Median times of one model's plain step, measured step and extra collectives."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from adabatch.distributed import all_reduce_stats, check_agreement, wrap_model
    from adabatch.stats import GradStatsTracker

    torch.manual_seed(0)
    net = make()
    d_in = net[0].in_features
    model = wrap_model(net.to(env.device), "ddp", env)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, d_in, device=env.device)  # 64 per rank: a global batch of 128
    y = torch.randint(0, 10, (64,), device=env.device)

    def plain() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    t_plain = median_ms(plain, reps, warmup=5)
    tracker = GradStatsTracker(model.module, inner_products=True)

    def measured() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        tracker.pop()
        opt.step()

    t_measured = median_ms(measured, reps, warmup=5)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    stats = tracker.pop()
    t_reduce = median_ms(lambda: all_reduce_stats(stats), reps, warmup=5)
    t_check = median_ms(lambda: check_agreement([128, 256, 1.5], "bench"), reps, warmup=5)
    flag = torch.zeros(1, dtype=torch.float64, device=env.device)
    t_flag = median_ms(lambda: dist.all_reduce(flag, op=dist.ReduceOp.MAX), reps, warmup=5)
    tracker.remove()
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": 128,
        "plain_step_ms": t_plain,
        "measured_step_ms": t_measured,
        "all_reduce_stats_ms": t_reduce,
        "decision_check_ms": t_check,
        "stop_flag_ms": t_flag,
    }


def collectives_worker(out: str, device: str, reps: int) -> None:
    """Inside torchrun: measure every model, rank 0 writes the rows."""
    import torch
    from torch import nn

    from adabatch.distributed import init_from_env, shutdown

    env = init_from_env(device=device)
    if env.device.type == "cpu":
        torch.set_num_threads(1)
    models = {
        "quick MLP 256-256-10": lambda: nn.Sequential(
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        ),
        "MNIST MLP 784-512-10": lambda: nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10)
        ),
    }
    rows = [{"model": name, **_measure(make, env, reps)} for name, make in models.items()]
    if env.is_main:
        Path(out).write_text(json.dumps(rows))
    shutdown()


def collectives_part(device: str, reps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", __file__, "--worker", str(out), "--device", device,
               "--reps", str(reps)]  # fmt: skip
        subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True)
        rows = json.loads(out.read_text())
    for r in rows:
        print(
            f"{r['model']:22s} ({r['parameters']:,} params, b {r['batch']} over 2 ranks): "
            f"plain DDP step {r['plain_step_ms']:.2f} ms, measured {r['measured_step_ms']:.2f} ms;"
            f" all_reduce_stats {r['all_reduce_stats_ms']:.3f} ms "
            f"({r['all_reduce_stats_ms'] / r['plain_step_ms']:.1%} of a plain step), "
            f"decision check {r['decision_check_ms']:.3f} ms, stop flag {r['stop_flag_ms']:.3f} ms"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "runs", "collectives"), default="all")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each quick run")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/distributed.json"))
    parser.add_argument("--worker", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        collectives_worker(args.worker, args.device, args.reps)
        return
    result: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    if args.part in ("all", "runs"):
        result["runs"] = runs_part(args.rounds, args.epochs)
    if args.part in ("all", "collectives"):
        result["collectives"] = collectives_part(args.device, args.reps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
