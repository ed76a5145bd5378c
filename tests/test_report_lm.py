"""Comparisons of language models: validation loss (lower is better) at evaluations every N.

The runs are written by hand; every expected number is computed by hand below. Point k is
the first evaluation at or after k·N samples (N = 100 here), point 0 the epoch-0 record.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adabatch.experiments.comparison import METRICS, compare
from adabatch.experiments.curves import by_point, first_reaching
from adabatch.experiments.plots import LM_PLOT_FILES, plot_comparison
from adabatch.experiments.run_dirs import find_runs
from adabatch.experiments.tables import render_table

T = 8  # tokens per sample
REPORT = {
    "methods": ["small", "ramp"],
    "baselines": ["small"],
    "metric": "test_loss",
    "axis": "evaluation",
    "target": None,
    "title": "lm",
}


def lm_records(batches: list[int], losses: dict[int, float], every: int = 100) -> list[dict]:
    """Step records for ``batches`` (1 s per 100 samples) and an eval record at each crossing.

    ``losses`` maps the evaluation number k (the last multiple passed) to its loss; an eval
    record is written exactly when the trainer would (samples // every grew at that step).
    """
    lines = [
        {
            "kind": "epoch",
            "epoch": 0,
            "step": 0,
            "samples": 0,
            "tokens": 0,
            "time": 0.0,
            "batch_size": batches[0],
            "lr": 1e-3,
            "test_loss": 5.0,
            "test_accuracy": 1.0,
        }
    ]
    samples = 0
    for step, batch in enumerate(batches, start=1):
        before = samples // every
        samples += batch
        common = {
            "step": step,
            "samples": samples,
            "tokens": samples * T,
            "time": samples / 100,
            "batch_size": batch,
            "batch_tokens": batch * T,
            "lr": 1e-3,
            "epoch": 0,
        }
        lines.append({"kind": "step", "loss": 6.0 - step / 10, **common})
        if samples // every > before:
            k = samples // every
            lines.append(
                {
                    "kind": "eval",
                    "evaluation": k,
                    "test_loss": losses[k],
                    "test_accuracy": None,
                    **common,
                }
            )
    lines.append(
        {
            "kind": "epoch",
            **common,
            "epoch": 1,
            "test_loss": losses[max(losses)],
            "test_accuracy": 1.0,
        }
    )
    return lines


def write(root: Path, method: str, seed: int, lines: list[dict]) -> None:
    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"method": method, "seed": seed, "suite": "lm", "report": REPORT})
    )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))


@pytest.fixture
def runs(tmp_path):
    # small: batch 50 → an evaluation every other step, at k = 1..4 (samples 100..400)
    write(tmp_path, "small", 0, lm_records([50] * 8, {1: 4.0, 2: 3.0, 3: 2.6, 4: 2.4}))
    write(tmp_path, "small", 1, lm_records([50] * 8, {1: 4.2, 2: 3.2, 3: 2.8, 4: 2.6}))
    # ramp: 50, 50, then 150 (passes k = 2 and 3 at once: 250 → crosses 200; 400 → 3 and 4)
    ramp = [50, 50, 150, 150]  # samples 50, 100, 250, 400
    write(tmp_path, "ramp", 0, lm_records(ramp, {1: 4.1, 2: 3.1, 4: 2.5}))
    write(tmp_path, "ramp", 1, lm_records(ramp, {1: 4.3, 2: 3.3, 4: 2.7}))
    return find_runs([tmp_path])


def test_by_point_fills_the_points_a_large_batch_passes(runs):
    ramp = next(r for r in runs if r.method == "ramp" and r.seed == 0)
    table = by_point(ramp, "evaluation")
    assert sorted(table) == [0, 1, 2, 3, 4]
    assert table[0]["test_loss"] == 5.0  # the evaluation before training
    assert table[3] is table[4]  # one evaluation at 400 samples stands for 300 and 400
    assert table[3]["samples"] == 400
    with pytest.raises(ValueError, match="axis must be one of"):
        by_point(ramp, "tokens")


def test_first_reaching_a_loss_from_above():
    assert first_reaching([5.0, 3.0, float("nan"), 2.0], 2.5, higher=False) == 3
    assert first_reaching([5.0, 3.0], 2.5, higher=False) is None
    assert first_reaching([5.0, 2.5], 2.5, higher=False) == 1  # "at or below"


def test_loss_comparison_by_hand(runs):
    comparison = compare(runs)
    assert comparison.metric is METRICS["test_loss"] and comparison.axis == "evaluation"
    small, ramp = comparison.summary("small"), comparison.summary("ramp")
    # small: mean curve 5.0, 4.1, 3.1, 2.7, 2.5; final 2.5 ± 0.1 at point 4
    assert (small.points, small.final_mean) == (4, pytest.approx(2.5))
    assert small.final_sem == pytest.approx(0.1)
    assert small.total_tokens == 400 * T
    # default target: small's final 2.5 + 0.02 (the loss metric's tolerance) = 2.52
    assert comparison.target == pytest.approx(2.52)
    assert "small's final validation loss 2.5000 + 0.02" in comparison.target_note
    # ramp: mean curve 5.0, 4.2, 3.2, 2.6, 2.6 → never ≤ 2.52
    assert ramp.final_mean == pytest.approx(2.6) and ramp.to_target is None
    # small reaches 2.52 at point 4 (2.5): 400 samples, 8 steps, 4 s
    reach = small.to_target
    assert (reach.point, reach.samples, reach.tokens, reach.steps, reach.time) == (
        4,
        400,
        400 * T,
        8,
        4.0,
    )
    # own final + 0.02: ramp 2.62 first at point 3 (2.6), which is the 400-sample evaluation
    assert ramp.to_own_final.point == 3 and ramp.to_own_final.samples == 400
    assert ramp.speedup == {"small": None}
    # a target both reach: 3.2 → small at point 2 (3.1, 200 samples, 2 s), ramp at 2 (3.2)
    given = compare(runs, target=3.2)
    assert given.summary("small").to_target.time == 2.0
    assert given.summary("ramp").to_target.time == 2.5  # 250 samples
    assert given.summary("ramp").speedup["small"] == pytest.approx(2.0 / 2.5)


def test_loss_table_counts_tokens(runs):
    text = render_table(compare(runs, target=3.2))
    assert "Target validation loss: 3.200 (given)" in text
    header = next(line for line in text.splitlines() if line.startswith("method"))
    assert "tokens→target" in header and "epochs→target" not in header
    assert "tokens→final+0.02" in header
    row = next(line for line in text.splitlines() if line.startswith("ramp"))
    assert "2.600 ± 0.100" in row and "2.0k" in row  # 250 samples × 8 tokens


def test_bad_metric_and_axis(runs):
    with pytest.raises(ValueError, match="unknown metric 'perplexity'; valid: test_accuracy"):
        compare(runs, metric="perplexity")
    with pytest.raises(ValueError, match="axis must be one of"):
        compare(runs, axis="tokens")


def test_lm_plots(runs, tmp_path):
    written = plot_comparison(compare(runs), tmp_path / "plots")
    assert [p.name for p in written] == list(LM_PLOT_FILES)
    assert all(p.stat().st_size > 5000 for p in written)
    assert not math.isnan(compare(runs).summary("ramp").final_batch_size)


def test_runs_without_evaluations_are_skipped_on_the_evaluation_axis(runs, tmp_path) -> None:
    # a run made without train.eval_every: only its epoch records
    lines = [
        r for r in lm_records([50] * 8, {1: 4.0, 2: 3.0, 3: 2.6, 4: 2.4}) if r["kind"] != "eval"
    ]
    write(tmp_path / "more", "small", 7, lines)
    with pytest.warns(UserWarning, match="skipped: no eval record"):
        comparison = compare([*runs, *find_runs([tmp_path / "more"])])
    assert comparison.summary("small").seeds == 2  # not the loss before training as a result
    assert comparison.notes[0] == "skipped 1 run(s): see the warnings"


def test_an_old_accuracy_target_is_no_loss_target(runs) -> None:
    for run in runs:
        run.report.pop("target")
        run.report["target_accuracy"] = 90.0  # a report block written before metrics
    comparison = compare(runs)
    assert comparison.target == pytest.approx(2.52)  # the baseline fallback, not 90
    accuracy = compare(runs, metric="test_accuracy", axis="epoch")
    assert accuracy.target == 90.0
