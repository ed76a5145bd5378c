"""Comparison reports from saved run directories: reading, metrics, tables and plots.

Every expected number below is computed by hand from the fake runs of `SUITE` (a data set of
1024 samples, four epochs, three methods), never by calling the code under test.
"""

from __future__ import annotations

import json
import math
import re
import sys
import warnings
from pathlib import Path

import pytest

from adabatch._over_seeds import mean_sem
from adabatch.errors import ReportError
from adabatch.experiments.comparison import compare
from adabatch.experiments.curves import first_reaching, mean_curve, step_curve
from adabatch.experiments.plots import accuracy_floor, plot_comparison
from adabatch.experiments.run_dirs import Run, find_runs, load_run
from adabatch.experiments.tables import comparison_to_json, format_count, render_table

DATASET = 1024
REPORT = {
    "methods": ["sgd-small", "sgd-large", "divebatch"],
    "baselines": ["sgd-small", "sgd-large"],
    "target_accuracy": None,
    "title": "CIFAR-10 ResNet",
}

# method -> seed -> per completed epoch 0..4: test accuracy (%), training time (s), batch size
# in force at the end of the epoch (so the one used during the next epoch).
SUITE = {
    "sgd-small": {
        0: ([10, 60, 80, 88, 90], [0, 10, 20, 30, 40], [128] * 5),
        1: ([10, 62, 82, 90, 92], [0, 12, 24, 36, 48], [128] * 5),
    },
    "sgd-large": {
        0: ([10, 50, 70, 84, 88], [0, 4, 8, 12, 16], [512] * 5),
        1: ([10, 52, 72, 86, 90], [0, 4, 8, 12, 16], [512] * 5),
    },
    "divebatch": {
        0: ([10, 70, 86, 90, 91], [0, 10, 15, 18, 20], [128, 256, 512, 1024, 1024]),
        1: ([10, 72, 88, 91, 92], [0, 11, 16, 19, 21], [128, 256, 512, 1024, 1024]),
        2: ([10, 71, 87, 92, 93], [0, 12, 17, 20, 22], [128, 128, 256, 512, 512]),
    },
}
# Hand-computed means over seeds of the accuracy curves:
#   sgd-small  [10, 61, 81, 89, 91]   final 91 ± 1 (90, 92)
#   sgd-large  [10, 51, 71, 85, 89]   final 89 ± 1 (88, 90)
#   divebatch  [10, 71, 87, 91, 92]   final 92 ± 1/√3 (91, 92, 93)
# Default target (no target in the configs): sgd-small's final 91 − 1 = 90.


def records(accuracy, times, batches, *, with_steps=True):
    """Epoch (and step) records of one run; steps follow the batch size of the previous epoch."""
    lines = []
    step, samples = 0, 0
    for epoch, (acc, time, batch) in enumerate(zip(accuracy, times, batches, strict=True)):
        if epoch > 0:
            used = batches[epoch - 1]
            start_time = times[epoch - 1]
            for k in range(DATASET // used):
                step += 1
                samples += used
                if with_steps:
                    lines.append(
                        {
                            "kind": "step",
                            "epoch": epoch - 1,
                            "step": step,
                            "samples": samples,
                            "time": start_time + (time - start_time) * (k + 1) * used / DATASET,
                            "batch_size": used,
                            "lr": 0.1,
                            "loss": 2.0 * math.exp(-samples / 2000) + 0.1,
                        }
                    )
        lines.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "step": step,
                "samples": samples,
                "time": float(time),
                "elapsed": time * 1.2 + 0.5,
                "batch_size": batch,
                "lr": 0.1,
                "train_loss": None if epoch == 0 else 1.0 / epoch,
                "test_loss": 2.0 / (epoch + 1),
                "test_accuracy": float(acc),
            }
        )
    return lines


def write_run(
    root: Path,
    method: str,
    seed: int,
    lines: list,
    *,
    status: str | None = "completed",
    report: dict | None = None,
    name: str | None = None,
    tail: str = "",
) -> Path:
    """A run directory: config.json, metrics.jsonl (plus ``tail`` verbatim), summary.json."""
    run_dir = root / (name or f"{method}-seed{seed}")
    run_dir.mkdir(parents=True)
    config = {
        "method": method,
        "seed": seed,
        "suite": "cifar10",
        "experiment": "cifar10-resnet",
        "model": "resnet18",
        "report": REPORT if report is None else report,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (run_dir / "metrics.jsonl").write_text(text + tail)
    if status is not None:
        epochs = [r for r in lines if isinstance(r, dict) and r.get("kind") == "epoch"]
        summary = {
            "status": status,
            "final_test_accuracy": epochs[-1]["test_accuracy"] if epochs else None,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def write_suite(root: Path, *, report: dict | None = None) -> list[Path]:
    return [
        write_run(root, method, seed, records(*curves), report=report)
        for method, seeds in SUITE.items()
        for seed, curves in seeds.items()
    ]


@pytest.fixture
def suite(tmp_path: Path) -> list[Run]:
    write_suite(tmp_path / "runs")
    return find_runs([tmp_path / "runs"])


def runs_of(runs: list[Run], method: str) -> list[Run]:
    return [run for run in runs if run.method == method]


# ------------------------------------------------------------------------------------ loading


def test_load_run_reads_config_records_and_status(tmp_path):
    run = load_run(write_run(tmp_path, "divebatch", 3, records(*SUITE["divebatch"][0])))
    assert (run.method, run.seed, run.status) == ("divebatch", 3, "completed")
    assert [r["epoch"] for r in run.epochs] == [0, 1, 2, 3, 4]
    # 8 steps at 128, 4 at 256, 2 at 512, 1 at 1024
    assert [r["step"] for r in run.steps] == list(range(1, 16))
    assert run.epochs[-1]["step"] == 15
    assert run.epochs[0]["train_loss"] is None


def test_missing_summary_means_incomplete(tmp_path):
    run = load_run(
        write_run(tmp_path, "sgd-small", 0, records(*SUITE["sgd-small"][0]), status=None)
    )
    assert run.status == "incomplete"


def test_truncated_last_line_is_ignored(tmp_path):
    lines = records(*SUITE["sgd-small"][0], with_steps=False)
    cut = json.dumps({"kind": "epoch", "epoch": 5, "test_accuracy": 91.0})[:17]
    run = load_run(write_run(tmp_path, "sgd-small", 0, lines, tail=cut, status=None))
    assert [r["epoch"] for r in run.epochs] == [0, 1, 2, 3, 4]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    lines = records(*SUITE["sgd-small"][0], with_steps=False)
    lines.insert(2, '{"kind": "epoch", "epo')
    run_dir = write_run(tmp_path, "sgd-small", 0, lines)
    with pytest.raises(ReportError, match=re.escape(f"{run_dir / 'metrics.jsonl'}:3")):
        load_run(run_dir)


def test_unknown_kinds_are_ignored(tmp_path):
    lines = records(*SUITE["sgd-small"][0], with_steps=False)
    lines.insert(0, {"kind": "hparams", "epoch": 99, "step": 99, "lr": 1.0})
    lines.insert(3, {"kind": "checkpoint", "epoch": 1, "path": "ckpt.pt"})
    lines.insert(4, {"no_kind": True})
    run = load_run(write_run(tmp_path, "sgd-small", 0, lines))
    assert [r["epoch"] for r in run.epochs] == [0, 1, 2, 3, 4]
    assert run.steps == []


def test_resumed_run_keeps_the_records_written_last(tmp_path):
    first = records(*SUITE["sgd-small"][0], with_steps=False)
    replayed = dict(first[2], test_accuracy=81.5)  # epoch 2 logged again after a resume
    lines = [*first[:4], replayed, *first[3:]]
    run = load_run(write_run(tmp_path, "sgd-small", 0, lines))
    assert [r["epoch"] for r in run.epochs] == [0, 1, 2, 3, 4]
    assert run.epochs[2]["test_accuracy"] == 81.5


def test_missing_config_error_names_the_path(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(ReportError, match=re.escape(str(empty))):
        load_run(empty)
    with pytest.raises(ReportError, match=re.escape(str(empty))):
        find_runs([empty])
    with pytest.raises(ReportError, match=re.escape(str(tmp_path / "absent"))):
        find_runs([tmp_path / "absent"])


def test_unreadable_config_error_names_the_file(tmp_path):
    run_dir = write_run(tmp_path, "sgd-small", 0, [])
    (run_dir / "config.json").write_text('{"method": "sgd-sm')
    with pytest.raises(ReportError, match=re.escape(str(run_dir / "config.json"))):
        load_run(run_dir)
    (run_dir / "config.json").write_text('{"seed": 0}')
    with pytest.raises(ReportError, match="method"):
        load_run(run_dir)


def test_find_runs_recurses_dedupes_and_sorts(tmp_path):
    write_run(tmp_path / "b", "sgd-small", 1, records(*SUITE["sgd-small"][1]))
    direct = write_run(tmp_path / "a" / "deep", "sgd-small", 0, records(*SUITE["sgd-small"][0]))
    write_run(tmp_path / "a", "divebatch", 0, records(*SUITE["divebatch"][0]))
    # a config.json inside a run directory is not another run
    (direct / "checkpoints").mkdir()
    (direct / "checkpoints" / "config.json").write_text("not json")
    runs = find_runs([tmp_path, direct, str(tmp_path / "a")])
    assert [(run.method, run.seed) for run in runs] == [
        ("divebatch", 0),
        ("sgd-small", 0),
        ("sgd-small", 1),
    ]


# ------------------------------------------------------------------------------------ metrics


def test_mean_sem_by_hand():
    assert mean_sem([90.0, 92.0]) == (91.0, 1.0)  # std √2, / √2
    mean, sem = mean_sem([91.0, None, 92.0, 93.0])
    assert mean == 92.0
    assert sem == pytest.approx(1 / math.sqrt(3))
    assert mean_sem([7.0]) == (7.0, 0.0)
    assert all(math.isnan(v) for v in mean_sem([None]))


def test_mean_curve_by_hand(suite):
    curve = mean_curve(runs_of(suite, "divebatch"), "test_accuracy")
    assert curve.x == (0, 1, 2, 3, 4)
    assert curve.mean == (10, 71, 87, 91, 92)
    assert curve.sem[0] == 0.0
    assert curve.sem[1:] == pytest.approx([1 / math.sqrt(3)] * 4)
    assert curve.low == (10, 70, 86, 90, 91)
    assert curve.high == (10, 72, 88, 92, 93)
    assert curve.n == 3
    time = mean_curve(runs_of(suite, "sgd-small"), "time")
    assert time.mean == (0, 11, 22, 33, 44)
    assert time.sem == pytest.approx([0, 1, 2, 3, 4])  # seeds 10 and 12 s per epoch
    loss = mean_curve(runs_of(suite, "sgd-small"), "train_loss")
    assert math.isnan(loss.mean[0])  # null before training
    assert loss.mean[1:] == (1.0, 0.5, 1 / 3, 0.25)


def test_mean_curve_uses_the_epochs_all_runs_have(tmp_path):
    long = write_run(tmp_path, "m", 0, records(*SUITE["sgd-small"][0], with_steps=False))
    acc, times, batches = SUITE["sgd-small"][1]
    short = write_run(tmp_path, "m", 1, records(acc[:3], times[:3], batches[:3]))
    curve = mean_curve([load_run(long), load_run(short)], "test_accuracy")
    assert curve.x == (0, 1, 2)
    assert curve.mean == (10, 61, 81)


def test_first_reaching():
    values = [10.0, 71.0, 87.0, 91.0, 92.0]
    assert first_reaching(values, 90.0) == 3
    assert first_reaching(values, 91.0) == 3  # at or above
    assert first_reaching(values, 10.0) == 0
    assert first_reaching(values, 92.5) is None
    assert first_reaching([None, math.nan, 95.0], 90.0) == 2


def test_step_curve_bins_by_hand(tmp_path):
    def steps(samples, losses):
        return [
            {"kind": "step", "step": i + 1, "samples": s, "loss": v}
            for i, (s, v) in enumerate(zip(samples, losses, strict=True))
        ]

    a = load_run(write_run(tmp_path, "m", 0, steps([100, 200, 300, 400], [4, 3, 2, 1])))
    b = load_run(write_run(tmp_path, "m", 1, steps([200, 400, 600], [3, 1, 0.5])))
    curve = step_curve([a, b], "loss", bins=2)
    # range 0..400 (the shorter run), two bins of 200 samples; weights = samples covered
    # a: (4·100 + 3·100)/200 = 3.5, (2 + 1)/2 = 1.5; b: 3, 1
    assert curve.x == (100, 300)
    assert curve.mean == (3.25, 1.25)
    assert curve.low == (3, 1)
    assert curve.high == (3.5, 1.5)
    assert curve.sem == pytest.approx([0.25, 0.25])
    # an empty middle bin is interpolated; a null loss is left out
    c = load_run(write_run(tmp_path, "m", 2, steps([50, 60, 70, 300], [6, 0, None, 1])))
    curve = step_curve([c], "loss", bins=3)
    # bin 0: (6·50 + 0·10)/60 = 5; bin 2: 1 (covers 230 samples); bin 1 between: 3
    assert curve.x == (50, 150, 250)
    assert curve.mean == (5, 3, 1)


def test_compare_summaries_by_hand(suite):
    comparison = compare(suite)
    assert [s.method for s in comparison.methods] == ["sgd-small", "sgd-large", "divebatch"]
    assert comparison.baselines == ("sgd-small", "sgd-large")
    assert comparison.target == 90.0  # sgd-small final 91 − 1
    assert "sgd-small" in comparison.target_note and "91.00%" in comparison.target_note
    assert comparison.title == "CIFAR-10 ResNet"
    assert comparison.notes == ()

    small = comparison.summary("sgd-small")
    assert (small.seeds, small.final_mean, small.final_sem) == (2, 91.0, 1.0)
    assert small.to_target is not None
    assert small.to_target.point == 4
    assert (small.to_target.steps, small.to_target.samples) == (32, 4096)
    assert small.to_target.time == 44.0  # (40 + 48)/2
    assert small.total_time == 44.0
    assert small.final_batch_size == 128

    large = comparison.summary("sgd-large")
    assert large.to_target is None  # mean accuracy tops out at 89 < 90
    assert large.final_mean == 89.0
    assert large.to_own_final is not None
    assert (large.to_own_final.point, large.to_own_final.time) == (4, 16.0)  # 89 ≥ 88

    dive = comparison.summary("divebatch")
    assert dive.seeds == 3
    assert dive.seed_values == (0, 1, 2)
    assert dive.final_mean == 92.0
    assert dive.final_sem == pytest.approx(1 / math.sqrt(3))
    assert dive.final_batch_size == pytest.approx((1024 + 1024 + 512) / 3)
    assert dive.total_time == 21.0
    reach = dive.to_target
    assert reach is not None
    assert reach.point == 3  # mean 91 ≥ 90 first at epoch 3 (87 at epoch 2)
    # seeds 0 and 1: 8 + 4 + 2 steps; seed 2 (128, 128, 256): 8 + 8 + 4
    assert reach.steps == pytest.approx((14 + 14 + 20) / 3)
    assert reach.samples == 3 * 1024
    assert reach.time == 19.0  # (18 + 19 + 20)/3


def test_own_final_criterion(suite):
    dive = compare(suite).summary("divebatch")
    assert dive.own_target == 91.0
    # mean curve [10, 71, 87, 91, 92]: 91 ≥ 92 − 1 at epoch 3 exactly
    assert dive.to_own_final is not None
    assert (dive.to_own_final.point, dive.to_own_final.time) == (3, 19.0)
    assert compare(suite, within=0.5).summary("divebatch").to_own_final.point == 4


def test_speedups_by_hand(suite):
    comparison = compare(suite)
    dive = comparison.summary("divebatch")
    assert dive.speedup["sgd-small"] == pytest.approx(44 / 19)
    assert dive.speedup["sgd-large"] is None  # sgd-large never reaches 90
    assert comparison.summary("sgd-small").speedup["sgd-small"] == 1.0
    assert comparison.summary("sgd-large").speedup == {"sgd-small": None, "sgd-large": None}
    # own-final − 1: sgd-small 44 s, sgd-large 16 s, divebatch 19 s
    assert dive.speedup_own["sgd-small"] == pytest.approx(44 / 19)
    assert dive.speedup_own["sgd-large"] == pytest.approx(16 / 19)


def test_target_argument_overrides(suite):
    comparison = compare(suite, target=85.0)
    assert comparison.target == 85.0
    assert comparison.target_note == "given"
    # ≥ 85 first at: sgd-small epoch 3 (33 s), sgd-large epoch 3 (12 s), divebatch epoch 2 (16 s)
    dive = comparison.summary("divebatch")
    assert (dive.to_target.point, dive.to_target.time) == (2, 16.0)
    assert dive.speedup["sgd-small"] == pytest.approx(33 / 16)
    assert dive.speedup["sgd-large"] == pytest.approx(12 / 16)


def test_target_from_configs(tmp_path):
    write_suite(tmp_path, report=dict(REPORT, target_accuracy=80.0))
    comparison = compare(find_runs([tmp_path]))
    assert comparison.target == 80.0
    assert "config" in comparison.target_note
    # ≥ 80 first at: sgd-small epoch 2 (22 s), divebatch epoch 2 (16 s)
    assert comparison.summary("divebatch").speedup["sgd-small"] == pytest.approx(22 / 16)


def test_target_fallback_skips_a_baseline_without_runs(suite):
    comparison = compare(suite, baselines=["adam", "sgd-large"])
    assert comparison.target == 88.0  # sgd-large final 89 − 1
    assert "sgd-large" in comparison.target_note and "adam" in comparison.target_note
    assert any("'adam' has no run" in note for note in comparison.notes)
    assert comparison.summary("divebatch").speedup["adam"] is None


def test_no_baseline_no_target(suite):
    comparison = compare(suite, baselines=[])
    assert comparison.target is None
    assert comparison.target_note.startswith("none")
    assert all(s.to_target is None and s.speedup == {} for s in comparison.methods)


def test_method_order_follows_the_suite_then_sorted(tmp_path):
    curves = SUITE["sgd-small"][0]
    report = dict(REPORT, methods=["divebatch", "sgd-large", "sgd-small"])
    for method in ("zeta", "sgd-small", "alpha", "divebatch"):
        write_run(tmp_path, method, 0, records(*curves, with_steps=False), report=report)
    comparison = compare(find_runs([tmp_path]))
    assert [s.method for s in comparison.methods] == ["divebatch", "sgd-small", "alpha", "zeta"]
    assert comparison.method_order == ("divebatch", "sgd-large", "sgd-small", "alpha", "zeta")


def test_incomplete_runs_skipped_with_a_warning(tmp_path):
    write_suite(tmp_path)
    killed = write_run(
        tmp_path, "divebatch", 7, records(*SUITE["divebatch"][0]), status=None, tail='{"ki'
    )
    diverged = write_run(
        tmp_path, "sgd-large", 7, records(*SUITE["sgd-large"][0]), status="diverged"
    )
    runs = find_runs([tmp_path])
    with pytest.warns(UserWarning) as caught:
        comparison = compare(runs)
    messages = [str(w.message) for w in caught]
    assert any(str(killed) in m and "incomplete" in m for m in messages)
    assert any(str(diverged) in m and "diverged" in m for m in messages)
    assert comparison.summary("divebatch").seeds == 3
    assert comparison.summary("sgd-large").seeds == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = compare(runs, include_incomplete=True)
    assert kept.summary("divebatch").seeds == 4
    assert kept.summary("sgd-large").seeds == 3


def test_no_completed_run_is_an_error(tmp_path):
    write_run(tmp_path, "divebatch", 0, records(*SUITE["divebatch"][0]), status=None)
    with pytest.warns(UserWarning), pytest.raises(ReportError, match="no run to compare"):
        compare(find_runs([tmp_path]))


def test_unequal_lengths_use_the_common_prefix_with_a_note(tmp_path):
    write_suite(tmp_path)
    acc, times, batches = SUITE["divebatch"][0]
    write_run(tmp_path, "divebatch", 9, records(acc[:4], times[:4], batches[:4]))
    comparison = compare(find_runs([tmp_path]))
    dive = comparison.summary("divebatch")
    assert dive.points == 3
    # epoch 3 accuracies 90, 91, 92, 90
    assert dive.final_mean == pytest.approx(90.75)
    assert any("divebatch" in note and "3, 4" in note for note in comparison.notes)


# ------------------------------------------------------------------------------------ tables


def test_format_count():
    assert format_count(980) == "980"
    assert format_count(3072) == "3.1k"
    assert format_count(12_345) == "12.3k"
    assert format_count(123_456) == "123k"
    assert format_count(999_960) == "1.0M"
    assert format_count(1_234_567) == "1.2M"
    assert format_count(2.5e9) == "2.5G"
    assert format_count(None) == "—"
    assert format_count(math.nan) == "—"


EXPECTED_ROWS = [
    # method, seeds, final, →target: epochs, steps, samples, time; →final−1: epochs, time; ×
    ["sgd-small", "2", "91.00 ± 1.00", "4", "32", "4.1k", "44.0", "4", "44.0", "1.00×", "—"],
    ["sgd-large", "2", "89.00 ± 1.00", "—", "—", "—", "—", "4", "16.0", "—", "—"],
    ["divebatch", "3", "92.00 ± 0.58", "3", "16", "3.1k", "19.0", "3", "19.0", "2.32×", "—"],
]


def test_text_table(suite):
    text = render_table(compare(suite))
    lines = text.splitlines()
    assert lines[0] == "CIFAR-10 ResNet"
    target = "Target test accuracy: 90.00% (sgd-small's final test accuracy 91.00% − 1 points)"
    assert target in text
    rule_index = next(i for i, line in enumerate(lines) if set(line) == {"-", " "})
    header, rule = lines[rule_index - 1], lines[rule_index]
    assert header.split()[:2] == ["method", "seeds"]
    assert header.rstrip().endswith("×sgd-small  ×sgd-large")
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    rows = lines[rule_index + 1 : rule_index + 4]
    for row, expected in zip(rows, EXPECTED_ROWS, strict=True):
        row = row.ljust(len(rule))
        cells = [row[start:end].strip() for start, end in spans]
        assert cells == expected
        # numbers are right-aligned: each cell ends at its column's end
        for (_, end), cell in zip(spans[1:], cells[1:], strict=True):
            assert row[:end].endswith(cell)


def test_markdown_table(suite):
    text = render_table(compare(suite), fmt="markdown")
    lines = text.splitlines()
    assert lines[0] == "### CIFAR-10 ResNet"
    assert "Target test accuracy: 90.00%" in text
    start = lines.index(next(line for line in lines if line.startswith("| method |")))
    assert lines[start + 1] == "| :--- | " + " | ".join(["---:"] * 10) + " |"
    for line, expected in zip(lines[start + 2 : start + 5], EXPECTED_ROWS, strict=True):
        assert line == "| " + " | ".join(expected) + " |"
    with pytest.raises(ValueError, match="fmt"):
        render_table(compare(suite), fmt="html")


def test_notes_are_rendered(tmp_path):
    write_suite(tmp_path)
    acc, times, batches = SUITE["divebatch"][0]
    write_run(tmp_path, "divebatch", 9, records(acc[:4], times[:4], batches[:4]))
    comparison = compare(find_runs([tmp_path]))
    assert "Note: divebatch: runs of 3, 4 epochs" in render_table(comparison)
    assert "- divebatch: runs of 3, 4 epochs" in render_table(comparison, fmt="markdown")


def test_comparison_to_json(suite):
    data = comparison_to_json(compare(suite))
    data = json.loads(json.dumps(data, allow_nan=False))  # strict JSON round trip
    assert data["target"] == 90.0
    assert [m["method"] for m in data["methods"]] == ["sgd-small", "sgd-large", "divebatch"]
    dive = data["methods"][2]
    assert dive["to_target"] == {
        "point": 3,
        "steps": pytest.approx(16.0),
        "samples": 3072.0,
        "time": 19.0,
        "tokens": None,  # not text: undefined
        "rounds": None,  # one process: no communication
    }
    assert dive["speedup"] == {"sgd-small": pytest.approx(44 / 19), "sgd-large": None}
    assert data["methods"][1]["to_target"] is None
    assert len(dive["runs"]) == 3


# ------------------------------------------------------------------------------------ plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plots_are_written_as_png(suite, tmp_path):
    pytest.importorskip("matplotlib")
    comparison = compare(suite)
    paths = plot_comparison(comparison, tmp_path / "plots", title="Test")
    assert [p.name for p in paths] == [
        "batch_size.png",
        "accuracy_vs_epoch.png",
        "accuracy_vs_time.png",
        "loss_vs_samples.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000
        assert data[:8] == PNG_SIGNATURE


def test_plots_from_runs_without_step_records(tmp_path):
    pytest.importorskip("matplotlib")
    for seed, curves in SUITE["divebatch"].items():
        write_run(tmp_path / "runs", "divebatch", seed, records(*curves, with_steps=False))
    paths = plot_comparison(find_runs([tmp_path / "runs"]), tmp_path / "out")
    assert all(path.read_bytes()[:8] == PNG_SIGNATURE for path in paths)


def test_plots_without_matplotlib_say_what_to_install(suite, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=re.escape('pip install "adabatch[experiments]"')):
        plot_comparison(suite, tmp_path)


@pytest.mark.parametrize(
    ("finals", "target", "expected"),
    [
        ([98.4, 96.3], 98.0, 94.3),  # the lowest final sets it
        ([85.0, 84.9], 73.0, 71.0),  # a target below every final sets it
        ([1.5, 30.0], None, 0.0),  # never below 0
        ([float("nan"), 90.0], None, 88.0),  # a run without a final accuracy is skipped
    ],
)
def test_accuracy_floor(finals: list[float], target: float | None, expected: float) -> None:
    assert accuracy_floor(finals, target) == pytest.approx(expected)


def test_accuracy_floor_without_finals_is_none() -> None:
    assert accuracy_floor([], 90.0) is None
    assert accuracy_floor([float("nan")]) is None
