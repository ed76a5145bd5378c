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
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine
from adabatch.sparse import objective, signed_labels
from adabatch.sparse.data import to_scipy
from adabatch.sparse.lockfree import hogwild
from adabatch.sparse.parallel import parallel_adabatch
from adabatch.sparse.sequential import DivergenceError, sgd
from adabatch.sparse.variance_reduction import svrg

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (1, 8, 32, 128, 512)


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


def run_sgd(X: Any, y: np.ndarray, Xt: Any, yt: np.ndarray, **kw: Any) -> dict[str, Any]:
    try:
        res = sgd(X, y, X_test=Xt, y_test=yt, **kw)
    except DivergenceError:
        return {"diverged": True}
    loss, err = final(res)
    return {"diverged": False, "loss": loss, "test_error": err, "trace": res.trace.as_dict()}


def pick_step(X: Any, y: np.ndarray, epochs: float, grid: tuple[float, ...]) -> float:
    """The single-sample step with the lowest loss after the budget, at b = 1."""
    best, best_loss = grid[0], math.inf
    for step in grid:
        try:
            res = sgd(X, y, batch_size=1, step_size=step, epochs=epochs)
        except DivergenceError:
            continue
        print(f"  b=1, step {step:g}: loss {res.trace.loss[-1]:.4f}")
        if res.trace.loss[-1] < best_loss:
            best, best_loss = step, res.trace.loss[-1]
    return best


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
    # The grid spans 1/(L·‖x‖²) (L = 1/4 for the logistic loss, median row norm) × 1/8 … 4:
    # {0.5, …, 16} for unit-norm rows; LIBSVM files need not be normalised.
    row_sq = np.asarray(X.multiply(X).sum(axis=1)).reshape(-1)
    base = 4.0 / float(np.median(row_sq[row_sq > 0]))
    step = args.step or pick_step(
        X, y, args.epochs, tuple(base * f for f in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4))
    )
    print(
        f"single-sample step γ = {step:g}; budget {args.epochs:g} epochs = "
        f"{int(args.epochs * n):,} samples"
    )

    # 1. sample efficiency -------------------------------------------------------------
    common = {"step_size": step, "epochs": args.epochs, "record_every": record, "seed": 0}
    efficiency: dict[str, dict[str, Any]] = {}
    print(
        "\n| b | mean, γ: loss | AdaBatch, γ: loss | mean, γ·b: loss | test error % "
        "(mean γ / AdaBatch / mean γ·b) |"
    )
    print("|---:|---:|---:|---:|---|")
    for b in BATCHES:
        row = {
            "mean": run_sgd(X, y, Xt, yt, batch_size=b, rule="mean", **common),
            "adabatch": run_sgd(X, y, Xt, yt, batch_size=b, rule="adabatch", **common),
            "mean_scaled": run_sgd(
                X, y, Xt, yt, batch_size=b, rule="mean", scale_step=True, **common
            ),
        }
        efficiency[str(b)] = row

        def cell(r: dict[str, Any], key: str, scale: float = 1.0, digits: int = 4) -> str:
            return "diverged" if r["diverged"] else f"{scale * r[key]:.{digits}f}"

        errors = " / ".join(cell(r, "test_error", 100, 2) for r in row.values())
        print(
            f"| {b} | {cell(row['mean'], 'loss')} | {cell(row['adabatch'], 'loss')} | "
            f"{cell(row['mean_scaled'], 'loss')} | {errors} |"
        )
    base = efficiency["1"]["adabatch"]["loss"]
    print("\nloss increase over b = 1 at the same sample budget (loss_b − loss_1):")
    for b in BATCHES[1:]:
        row = efficiency[str(b)]
        parts = [
            f"{rule} {row[rule]['loss'] - base:+.4f}"
            if not row[rule]["diverged"]
            else f"{rule} diverged"
            for rule in ("mean", "adabatch", "mean_scaled")
        ]
        print(f"  b={b}: " + ", ".join(parts))

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
        "efficiency": efficiency,
        "parallel": parallel,
        "parallel_target": target,
        "svrg": svrg_results,
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")
    plot(efficiency, out.with_suffix(".png"), desc, step)
    print(f"\nwritten: {out}, {out.with_suffix('.png')}")


def plot(efficiency: dict[str, Any], path: Path, desc: str, step: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, rule, title in (
        (axes[0], "mean", f"mean aggregation, step γ = {step:g}"),
        (axes[1], "adabatch", f"AdaBatch aggregation, step γ = {step:g}"),
    ):
        for i, (b, row) in enumerate(efficiency.items()):
            r = row[rule]
            if r["diverged"]:
                continue
            t = r["trace"]
            ax.plot(t["samples"], t["loss"], color=f"C{i}", label=f"b = {b}")
        ax.set_title(title)
        ax.set_xlabel("samples seen")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False)
    axes[0].set_ylabel("training loss")
    fig.suptitle(desc, fontsize="small")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
