"""Plots comparing methods: batch size, the metric against epochs (or tokens) and time, loss.

A comparison by test accuracy over epochs draws `PLOT_FILES`; one by validation loss over
evaluations every N samples (a language model) draws `LM_PLOT_FILES`, against training
tokens (samples when the runs count no tokens).

Each method keeps one colour in every plot (``tab10``, in the comparison's method order), and
baselines are dashed; a line is the mean over seeds and the light band around it the range
(minimum to maximum) over seeds. The accuracy axes start a little below the lowest final accuracy
(`accuracy_floor`), so the differences that matter are not squeezed into the top of the plot.
matplotlib is imported only when plotting, through its Agg canvas: no window, no global pyplot
state, nothing left open.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .comparison import Comparison, compare
from .curves import Curve, mean_curve, step_curve
from .run_dirs import Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["LM_PLOT_FILES", "PLOT_FILES", "accuracy_floor", "plot_comparison"]

#: The files written by `plot_comparison` for a comparison of accuracy over epochs.
PLOT_FILES = (
    "batch_size.png",
    "accuracy_vs_epoch.png",
    "accuracy_vs_time.png",
    "loss_vs_samples.png",
)

#: The files written for a comparison of validation loss over evaluations (language models).
LM_PLOT_FILES = (
    "batch_size_vs_tokens.png",
    "val_loss_vs_tokens.png",
    "val_loss_vs_time.png",
    "loss_vs_tokens.png",
)

_BAND_ALPHA = 0.18
_DPI = 110


def _import_matplotlib() -> dict[str, Any]:
    try:
        from matplotlib import colormaps, ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('plotting needs matplotlib: pip install "adabatch[experiments]"') from exc
    return {"colormaps": colormaps, "ticker": ticker, "Canvas": FigureCanvasAgg, "Figure": Figure}


def accuracy_floor(
    finals: Iterable[float], target: float | None = None, margin: float = 2.0
) -> float | None:
    """The lower end of an accuracy axis (None when there is no finite final accuracy).

    It lies ``margin`` points below the lowest final accuracy and below the target, and never
    below 0. The first epochs (10 % → 90 %) would otherwise set the scale and flatten the last
    points of accuracy, which are what a comparison is about.
    """
    values = [v for v in finals if math.isfinite(v)]
    if not values:
        return None
    if target is not None and math.isfinite(target):
        values.append(target)
    return max(0.0, min(values) - margin)


def _draw(
    ax: Axes,
    x: Iterable[float],
    curve: Curve,
    colour: Any,
    label: str,
    step: bool = False,
    *,
    dashed: bool = False,
    lw: float = 1.8,
) -> None:
    """The mean line of ``curve`` at ``x``, with the min-max band when there are several runs."""
    x = list(x)
    ax.plot(
        x,
        curve.mean,
        color=colour,
        label=label,
        lw=lw,
        ls=(0, (5, 2)) if dashed else "-",
        drawstyle="steps-pre" if step else "default",
    )
    if curve.n > 1:
        ax.fill_between(
            x,
            curve.low,
            curve.high,
            color=colour,
            alpha=_BAND_ALPHA,
            lw=0,
            step="post" if step else None,
        )


def _plain(value: float, _position: Any = None) -> str:
    return f"{value:g}"


def _plain_2_5(value: float, _position: Any = None) -> str:
    """Label the minor ticks 2 and 5 of each decade of a log axis only."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if any(math.isclose(mantissa, m) for m in (2.0, 5.0)) else ""


def _target_line(ax: Axes, target: float | None, unit: str = "%") -> None:
    if target is not None:
        shown = f"{target:.2f}%" if unit == "%" else f"{target:.3f}"
        ax.axhline(target, color="0.35", ls="--", lw=1.0, label=f"target {shown}")


def plot_comparison(
    runs: Comparison | Iterable[Run],
    out_dir: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> list[Path]:
    """Write the four comparison plots as PNG files in ``out_dir``.

    For a comparison of validation loss over evaluations (`LM_PLOT_FILES`): the batch size
    against training tokens (from the step records), the validation loss against tokens and
    against training time, and the training loss against tokens. Otherwise (`PLOT_FILES`):

    - ``batch_size.png``: each epoch's batch size (that of its last step), drawn over the
      epoch (log2 axis);
    - ``accuracy_vs_epoch.png``: test accuracy against epochs;
    - ``accuracy_vs_time.png``: mean test accuracy against mean training time (evaluation
      excluded);
    - ``loss_vs_samples.png``: training loss of the step records against training samples seen
      (binned, log axis).

    The accuracy plots draw the target accuracy as a dashed line when there is one.

    Args:
        runs: A `Comparison` (its runs, order and target are used), or runs, compared with
            `adabatch.experiments.comparison.compare`'s defaults (so completed runs only).
        out_dir: The directory to write to (created if needed).
        title: The plots' title, instead of the comparison's.

    Returns:
        The paths written, in the order above.

    Raises:
        ImportError: matplotlib is not installed.
    """
    mpl = _import_matplotlib()
    comparison = runs if isinstance(runs, Comparison) else compare(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = mpl["colormaps"]["tab10"]
    ticker = mpl["ticker"]
    order = list(comparison.method_order)
    heading = title or comparison.title
    methods = [summary.method for summary in comparison.methods]
    baselines = set(comparison.baselines)
    lm = comparison.axis == "evaluation"
    metric = comparison.metric
    accuracy = metric.key == "test_accuracy"
    floor = (
        accuracy_floor((summary.final_mean for summary in comparison.methods), comparison.target)
        if accuracy
        else None
    )
    has_tokens = any(
        run.steps and "tokens" in run.steps[-1] for r in comparison.runs.values() for run in r
    )
    x_count = "tokens" if has_tokens else "samples"

    def colour(method: str) -> Any:
        return palette(order.index(method) % 10)

    def label(method: str) -> str:
        n = len(comparison.runs[method])
        return f"{method} ({n} seed{'s' * (n != 1)})"

    def figure(
        name: str, subtitle: str, xlabel: str, ylabel: str, draw: Callable[[Axes], None]
    ) -> Path:
        fig = mpl["Figure"](figsize=(7.0, 4.4), layout="constrained")
        mpl["Canvas"](fig)
        ax = fig.add_subplot()
        ax.set_title(f"{heading}: {subtitle}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3, lw=0.6)
        if xlabel == "epoch":
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        draw(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize="small")
        path = out / name
        fig.savefig(path, dpi=_DPI)
        fig.clear()
        return path

    def draw(ax: Axes, x: Iterable[float], curve: Curve, method: str, **kwargs: Any) -> None:
        _draw(ax, x, curve, colour(method), label(method), dashed=method in baselines, **kwargs)

    def accuracy_axis(ax: Axes) -> None:
        _target_line(ax, comparison.target, metric.unit)
        if not accuracy:
            loss_axis(ax)
            return
        if floor is None:
            return
        # The top too: autoscaling chose it with the first epochs' low values in view.
        highest = max(
            (float(y) for line in ax.lines for y in line.get_ydata() if math.isfinite(y)),
            default=floor + 1.0,
        )
        ax.set_ylim(floor, max(highest, floor + 1.0) + 0.05 * max(highest - floor, 1.0))

    def loss_axis(ax: Axes) -> None:
        # The evaluation before training (ln V for a fresh language model) would set the
        # scale and flatten the differences at the end: the top is the first point after it.
        later = [
            float(y)
            for line in ax.lines
            for y in list(line.get_ydata())[1:]
            if math.isfinite(float(y)) and len(line.get_ydata()) > 2
        ]
        if not later:
            return
        low, high = min(later), max(later)
        if comparison.target is not None:
            low = min(low, comparison.target)
        pad = 0.05 * max(high - low, 1e-3)
        ax.set_ylim(low - pad, high + pad)

    def batch_size(ax: Axes) -> None:
        for i, method in enumerate(methods):
            curve = mean_curve(comparison.runs[method], "batch_size")
            # Constant batches often coincide: earlier methods are drawn wider, so a line
            # drawn over another leaves it visible on both sides.
            lw = 1.6 + 2.0 * (len(methods) - 1 - i) / max(1, len(methods) - 1)
            draw(ax, curve.x, curve, method, step=True, lw=lw)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())

    def accuracy_vs_epoch(ax: Axes) -> None:
        for method in methods:
            curve = mean_curve(comparison.runs[method], metric.key, comparison.axis)
            draw(ax, curve.x, curve, method)
        accuracy_axis(ax)

    def accuracy_vs_time(ax: Axes) -> None:
        for method in methods:
            curve = mean_curve(comparison.runs[method], metric.key, comparison.axis)
            time = mean_curve(comparison.runs[method], "time", comparison.axis)
            draw(ax, time.mean, curve, method)
        accuracy_axis(ax)

    def metric_vs_count(ax: Axes) -> None:
        for method in methods:
            curve = mean_curve(comparison.runs[method], metric.key, comparison.axis)
            count = mean_curve(comparison.runs[method], x_count, comparison.axis)
            draw(ax, count.mean, curve, method)
        accuracy_axis(ax)
        ax.xaxis.set_major_formatter(ticker.EngFormatter())

    def batch_vs_count(ax: Axes) -> None:
        key = "batch_tokens" if has_tokens else "batch_size"
        for method in methods:
            curve = step_curve(comparison.runs[method], key, x=x_count, bins=200)
            if curve.x:
                draw(ax, curve.x, curve, method)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_major_formatter(ticker.EngFormatter())

    def loss_vs_samples(ax: Axes) -> None:
        for method in methods:
            curve = step_curve(comparison.runs[method], "loss", x=x_count if lm else "samples")
            if curve.x:
                draw(ax, curve.x, curve, method)
        if not ax.lines:
            ax.text(0.5, 0.5, "no step records", transform=ax.transAxes, ha="center", va="center")
            return
        ax.set_yscale("log", nonpositive="mask")
        # plain numbers (0.2, 0.5, 1, 2) rather than 2 × 10⁻¹: decades, and 2 and 5 between
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(_plain_2_5))
        ax.xaxis.set_major_formatter(ticker.EngFormatter())

    ylabel = f"{metric.name} (%)" if metric.unit == "%" else metric.name
    if lm:
        name = metric.name
        return [
            figure(
                LM_PLOT_FILES[0],
                "batch size",
                f"training {x_count}",
                f"batch size ({x_count}, log₂ scale)",
                batch_vs_count,
            ),
            figure(LM_PLOT_FILES[1], name, f"training {x_count}", name, metric_vs_count),
            figure(
                LM_PLOT_FILES[2],
                f"{name} against training time",
                "training time (s, evaluation excluded)",
                name,
                accuracy_vs_time,
            ),
            figure(
                LM_PLOT_FILES[3],
                "training loss",
                f"training {x_count} seen",
                "training loss (log scale)",
                loss_vs_samples,
            ),
        ]
    return [
        figure(
            PLOT_FILES[0], "batch size", "epoch", "batch size (samples, log₂ scale)", batch_size
        ),
        figure(PLOT_FILES[1], metric.name, "epoch", ylabel, accuracy_vs_epoch),
        figure(
            PLOT_FILES[2],
            f"{metric.name} against training time",
            "training time (s, evaluation excluded)",
            ylabel,
            accuracy_vs_time,
        ),
        figure(
            PLOT_FILES[3],
            "training loss",
            "training samples seen",
            "training loss (log scale)",
            loss_vs_samples,
        ),
    ]
