"""The sample-efficiency comparison of Défossez & Bach: loss after a fixed budget against b.

For each batch size b and seed, sequential mini-batch SGD (`adabatch.sparse.sgd`) runs the same
number of samples with three aggregations: the mean at the single-sample step γ, AdaBatch at γ,
and the mean at γ·b (its best case). The claim under test (arXiv 1711.01761): AdaBatch's loss
at a fixed sample budget degrades far less with b than the mean's. `adabatch compare sparse`
and ``benchmarks/sparse_adabatch.py`` both run it.
"""

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._over_seeds import mean_sem
from .._validate import as_int
from ..errors import DivergenceError
from .sequential import sgd

__all__ = [
    "BATCHES",
    "COMPARED",
    "Efficiency",
    "efficiency",
    "pick_step",
    "plot_efficiency",
    "render_efficiency",
    "run_comparison",
    "step_grid",
    "write_efficiency",
]

#: The batch sizes of the issue's comparison.
BATCHES: tuple[int, ...] = (1, 8, 32, 128, 512)
#: The three runs compared at each b: label → (`sgd`'s rule, its scale_step).
COMPARED: dict[str, tuple[str, bool]] = {
    "mean": ("mean", False),
    "adabatch": ("adabatch", False),
    "mean_scaled": ("mean", True),
}
_TITLES = {"mean": "mean, step γ", "adabatch": "AdaBatch, step γ", "mean_scaled": "mean, step γ·b"}


@dataclasses.dataclass
class Efficiency:
    """Final training losses (per seed; None = diverged) and seed 0's traces.

    ``losses[b][rule]`` lists one value per seed; ``traces[b][rule]`` is seed 0's `Trace` as
    a dict (None when it diverged).
    """

    step_size: float
    epochs: float
    seeds: int
    losses: dict[int, dict[str, list[float | None]]]
    test_errors: dict[int, dict[str, list[float | None]]]
    traces: dict[int, dict[str, dict[str, list[Any]] | None]]

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON (batch sizes as strings)."""
        out = dataclasses.asdict(self)
        for key in ("losses", "test_errors", "traces"):
            out[key] = {str(b): v for b, v in out[key].items()}
        return out


def step_grid(X: Any) -> tuple[float, ...]:
    """Single-sample steps to try: 1/(L·‖x‖²) × {1/8, …, 4}.

    L = 1/4 (the logistic loss) and ‖x‖² the median squared row norm: {0.5, 1, …, 16} for
    unit-norm rows; LIBSVM files need not be normalised.
    """
    row_sq = np.asarray(X.multiply(X).sum(axis=1)).reshape(-1)
    row_sq = row_sq[row_sq > 0]
    base = 4.0 / float(np.median(row_sq)) if row_sq.size else 4.0
    return tuple(base * f for f in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4))


def pick_step(X: Any, y: Any, epochs: float, grid: Sequence[float] | None = None) -> float:
    """The step of ``grid`` (default `step_grid`) with the lowest loss at b = 1 after the budget.

    Raises:
        DivergenceError: every step of the grid diverged.
    """
    best, best_loss = None, math.inf
    for step in step_grid(X) if grid is None else grid:
        try:
            loss = sgd(X, y, batch_size=1, step_size=step, epochs=epochs).trace.loss[-1]
        except DivergenceError:
            continue
        if loss < best_loss:
            best, best_loss = step, loss
    if best is None:
        raise DivergenceError("every single-sample step of the grid diverged; pass a smaller one")
    return best


def efficiency(
    X: Any,
    y: Any,
    *,
    step_size: float,
    epochs: float,
    batches: Sequence[int] = BATCHES,
    seeds: int = 1,
    X_test: Any = None,
    y_test: Any = None,
    record_every: int | None = None,
) -> Efficiency:
    """Run every (b, rule, seed) for ``epochs`` epochs at the single-sample ``step_size``."""
    seeds = as_int(seeds, "seeds", 1, hint="; the number of sampling orders to average over")
    record = record_every or max(1, X.shape[0] // 10)
    result = Efficiency(step_size, epochs, seeds, {}, {}, {})
    for b in batches:
        result.losses[b], result.test_errors[b], result.traces[b] = {}, {}, {}
        for label, (rule, scaled) in COMPARED.items():
            losses: list[float | None] = []
            errors: list[float | None] = []
            for seed in range(seeds):
                try:
                    res = sgd(
                        X,
                        y,
                        batch_size=b,
                        rule=rule,
                        scale_step=scaled,
                        step_size=step_size,
                        epochs=epochs,
                        seed=seed,
                        record_every=record,
                        X_test=X_test,
                        y_test=y_test,
                    )
                except DivergenceError:
                    losses.append(None)
                    errors.append(None)
                    if seed == 0:
                        result.traces[b][label] = None
                    continue
                losses.append(res.trace.loss[-1])
                errors.append(res.trace.test_error[-1])
                if seed == 0:
                    result.traces[b][label] = res.trace.as_dict()
            result.losses[b][label] = losses
            result.test_errors[b][label] = errors
    return result


def _mean_sem_cell(values: Sequence[float | None], digits: int) -> str:
    """The table cell of one rule: mean ± SEM over the seeds, "diverged" if one seed did.

    The numbers are `adabatch._over_seeds.mean_sem`'s; a single seed shows its value alone.
    """
    if any(v is None for v in values):
        return "diverged"
    mean, sem = mean_sem(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


def _error_cell(losses: Sequence[float | None], errors: Sequence[float | None]) -> str:
    if None in losses:
        return "diverged"
    if None in errors:
        return "—"  # no test set
    return _mean_sem_cell([100 * float(e) for e in errors if e is not None], 2)


def render_efficiency(result: Efficiency, title: str = "") -> str:
    """A markdown table: the loss (mean ± SEM over seeds) and test error per b and rule."""
    lines = [title] if title else []
    lines += [
        f"Training loss after {result.epochs:g} epochs at the single-sample step "
        f"γ = {result.step_size:g}, mean ± SEM over {result.seeds} seed(s) of the sampling order.",
        "",
        "| b | " + " | ".join(_TITLES[r] for r in COMPARED) + " | test error % (the same three) |",
        "|---:|" + "---:|" * len(COMPARED) + "---|",
    ]
    for b, row in result.losses.items():
        cells = [_mean_sem_cell(row[r], 4) for r in COMPARED]
        errors = [_error_cell(row[r], result.test_errors[b][r]) for r in COMPARED]
        lines.append(f"| {b} | " + " | ".join(cells) + " | " + " / ".join(errors) + " |")
    first = next(iter(result.losses))
    base = result.losses[first]["adabatch"]
    if None not in base:
        ref, _ = mean_sem(base)
        lines += ["", f"Loss increase over b = {first} at the same sample budget:"]
        for b, row in list(result.losses.items())[1:]:
            parts = []
            for r in COMPARED:
                if None in row[r]:
                    parts.append(f"{_TITLES[r]} diverged")
                else:
                    mean, _ = mean_sem(row[r])
                    parts.append(f"{_TITLES[r]} {mean - ref:+.4f}")
            lines.append(f"- b = {b}: " + ", ".join(parts))
    return "\n".join(lines)


def plot_efficiency(result: Efficiency, path: str | Path, title: str = "") -> Path:
    """Loss against samples seen, one line per b: mean aggregation | AdaBatch (seed 0)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, rule in zip(axes, ("mean", "adabatch"), strict=True):
        for i, (b, traces) in enumerate(result.traces.items()):
            trace = traces.get(rule)
            if trace is not None:
                ax.plot(trace["samples"], trace["loss"], color=f"C{i}", label=f"b = {b}")
        ax.set_title(f"{_TITLES[rule]} (γ = {result.step_size:g})")
        ax.set_xlabel("training samples seen")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False)
    axes[0].set_ylabel("training loss")
    if title:
        fig.suptitle(title, fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=110)
    fig.clear()
    return path


def write_efficiency(result: Efficiency, out_dir: str | Path, title: str) -> str:
    """Write ``report.md``, ``report.json`` and ``loss_vs_samples.png``; return the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render_efficiency(result, f"### {title}\n")
    (out / "report.md").write_text(text + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    plot_efficiency(result, out / "loss_vs_samples.png", title)
    return text


def run_comparison(
    out_dir: str | Path,
    *,
    seeds: int = 3,
    n: int = 100_000,
    d: int = 100_000,
    nnz: int = 30,
    epochs: float = 2.0,
    step_size: float | None = None,
    title: str = "sparse: AdaBatch vs mean aggregation against the batch size",
) -> str:
    """`adabatch compare sparse`: generate the Zipf-sparse problem, run `efficiency`, write it.

    The training set is ``synthetic_sparse(n, d, nnz_per_sample=nnz)`` (data seed 0), the test
    set n/5 rows from the same teacher (data seed 1); ``step_size`` defaults to `pick_step`.
    Seeds vary the sampling order. Returns the table; writes ``report.md``, ``report.json`` and
    ``loss_vs_samples.png`` in ``out_dir``.
    """
    from adabatch.datasets.synthetic.sparse import synthetic_sparse

    from .scipy_bridge import to_scipy

    common = {"nnz_per_sample": nnz, "zipf_exponent": 1.0, "teacher": 0}
    X, y = to_scipy(synthetic_sparse(n, d, seed=0, **common))
    X_test, y_test = to_scipy(synthetic_sparse(max(1, n // 5), d, seed=1, **common))
    step = pick_step(X, y, epochs) if step_size is None else step_size
    result = efficiency(
        X, y, step_size=step, epochs=epochs, seeds=seeds, X_test=X_test, y_test=y_test
    )
    data = f"synthetic_sparse(n={n}, d={d}, nnz_per_sample={nnz}, zipf_exponent=1)"
    return write_efficiency(result, out_dir, f"{title}; {data}")
