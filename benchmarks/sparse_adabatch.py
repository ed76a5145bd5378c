"""AdaBatch (Défossez & Bach) on sparse logistic regression: sample efficiency, parallel, SVRG.

Issue 6's experiment. On synthetic sparse classification with Zipf-distributed feature
frequencies (`adabatch.datasets.synthetic.sparse.synthetic_sparse`), or on a LIBSVM file given
with ``--data``:

1. **Sample efficiency.** Training loss (and test error) after a fixed budget of samples for
   b ∈ {1, 8, 32, 128, 512}: mean aggregation and AdaBatch at the same single-sample step γ,
   and mean aggregation with the step scaled to γ·b (its best case; it may diverge).
2. **Parallel.** Wall time to a target loss for synchronous parallel AdaBatch (b = 128) and
   Hogwild! (single-sample SGD, lock-free) with 1 and 2 worker processes.
3. **SVRG.** Mini-batch SVRG with mean aggregation and with AdaBatch aggregation (both
   corrections) at the same step.

Prints the tables, writes ``benchmarks/results/sparse_adabatch.json`` and a plot of the loss
against samples seen (one line per b and rule). Run:

    GLIBC_TUNABLES=... .venv/bin/python benchmarks/sparse_adabatch.py [--quick] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from adabatch.errors import DivergenceError
from adabatch.sparse import objective, signed_labels
from adabatch.sparse.experiment import (
    efficiency,
    pick_step,
    plot_efficiency,
    render_efficiency,
    step_grid,
)
from adabatch.sparse.lockfree import hogwild
from adabatch.sparse.parallel import parallel_adabatch
from adabatch.sparse.scipy_bridge import to_scipy
from adabatch.sparse.variance_reduction import svrg

RESULTS = Path(__file__).resolve().parent / "results"


def load(args: argparse.Namespace) -> tuple[Any, np.ndarray, Any, np.ndarray, str]:
    """(X, y, X_test, y_test, description) from --data or the generator."""
    if args.data:
        from adabatch.datasets.libsvm import load_libsvm

        train = load_libsvm(args.data)
        X, y = to_scipy(train)
        if len(np.unique(y)) != 2:
            raise SystemExit(f"{args.data}: needs a binary classification file (2 labels)")
        rng = np.random.default_rng(0)
        order = rng.permutation(X.shape[0])
        cut = int(0.8 * X.shape[0])
        tr, te = order[:cut], order[cut:]
        return X[tr], y[tr], X[te], y[te], f"{args.data} ({cut} train / {len(te)} test)"
    from adabatch.datasets.synthetic.sparse import synthetic_sparse

    common = {"nnz_per_sample": args.nnz, "zipf_exponent": args.zipf, "teacher": 0}
    X, y = to_scipy(synthetic_sparse(args.n, args.d, seed=0, **common))
    X_test, y_test = to_scipy(synthetic_sparse(args.n // 5, args.d, seed=1, **common))
    desc = (
        f"synthetic_sparse(n={args.n}, d={args.d}, nnz_per_sample={args.nnz}, "
        f"zipf_exponent={args.zipf}), test n={args.n // 5}"
    )
    return X, y, X_test, y_test, desc


def final(result: Any) -> tuple[float, float | None]:
    return result.trace.loss[-1], result.trace.test_error[-1]


def time_to(trace: dict[str, list[Any]], target: float) -> float | None:
    for t, loss in zip(trace["time"], trace["loss"], strict=True):
        if loss <= target:
            return t
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a binary LIBSVM file instead of the generator")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=100_000)
    parser.add_argument("--nnz", type=int, default=30)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--epochs", type=float, default=2.0, help="sample budget, in epochs")
    parser.add_argument("--step", type=float, help="single-sample step (default: tuned at b=1)")
    parser.add_argument("--quick", action="store_true", help="a small problem (a smoke test)")
    parser.add_argument("--out", default=str(RESULTS / "sparse_adabatch.json"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.d, args.epochs = 5000, 5000, 1.0

    X, y, Xt, yt, desc = load(args)
    n = X.shape[0]
    ys = signed_labels(y, "logistic")
    zero_loss = objective(X, ys, np.zeros(X.shape[1]), "logistic")
    print(f"data: {desc}; loss at w = 0: {zero_loss:.4f}")
    record = max(1, n // 10)
    step = args.step or pick_step(X, y, args.epochs)
    grid = ", ".join(f"{g:g}" for g in step_grid(X))
    print(
        f"single-sample step γ = {step:g} (the best at b = 1 over {grid}); "
        f"budget {args.epochs:g} epochs = {int(args.epochs * n):,} samples"
    )

    # 1. sample efficiency -------------------------------------------------------------
    result = efficiency(
        X, y, step_size=step, epochs=args.epochs, X_test=Xt, y_test=yt, record_every=record
    )
    print()
    print(render_efficiency(result))

    # 2. parallel ----------------------------------------------------------------------
    par_kw = {"step_size": step, "epochs": args.epochs, "record_every": max(1, n // 20)}
    parallel: dict[str, Any] = {}
    for workers in (1, 2):
        for b in (128, 2048):
            res = parallel_adabatch(X, y, workers=workers, batch_size=b, **par_kw)
            parallel[f"adabatch-{b}/{workers}"] = res.trace.as_dict()
        res = hogwild(X, y, workers=workers, **par_kw)
        parallel[f"hogwild/{workers}"] = res.trace.as_dict()
    finals = [t["loss"][-1] for t in parallel.values()]
    target = max(finals) + 0.02 * (zero_loss - max(finals))
    print(
        f"\nparallel: wall time to loss {target:.4f} (the worst final + 2 % of the way from "
        f"w = 0), budget {args.epochs:g} epochs"
    )
    print("| solver | workers | time to target (s) | final loss | total time (s) |")
    print("|---|---:|---:|---:|---:|")
    for key, trace in parallel.items():
        name, workers = key.split("/")
        tt = time_to(trace, target)
        print(
            f"| {name} | {workers} | {'—' if tt is None else f'{tt:.2f}'} | "
            f"{trace['loss'][-1]:.4f} | {trace['time'][-1]:.2f} |"
        )

    # 3. SVRG --------------------------------------------------------------------------
    svrg_results: dict[str, Any] = {}
    print("\n| SVRG, b = 128 | loss after 3 outer iterations | test error % |")
    print("|---|---:|---:|")
    for label, kw in (
        ("mean", {"rule": "mean"}),
        ("adabatch, preconditioned", {"rule": "adabatch", "correction": "preconditioned"}),
        ("adabatch, unbiased", {"rule": "adabatch", "correction": "unbiased"}),
    ):
        try:
            res = svrg(
                X,
                y,
                batch_size=128,
                step_size=step,
                epochs=3,
                record_every=record,
                X_test=Xt,
                y_test=yt,
                **kw,
            )
        except DivergenceError:
            svrg_results[label] = None
            print(f"| {label} | diverged | — |")
            continue
        svrg_results[label] = res.trace.as_dict()
        loss, err = final(res)
        print(f"| {label} | {loss:.4f} | {100 * err:.2f} |")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(),
        "data": desc,
        "step_size": step,
        "epochs": args.epochs,
        "efficiency": result.as_dict(),
        "parallel": parallel,
        "parallel_target": target,
        "svrg": svrg_results,
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")
    plot_efficiency(result, out.with_suffix(".png"), desc)
    print(f"\nwritten: {out}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
