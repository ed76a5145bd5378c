"""``adabatch compare sparse``: the numpy-solver suite through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adabatch.cli import main
from adabatch.experiments.suites import SUITES

SMALL = ["--n=1500", "--d=1500", "--nnz=10", "--epochs=0.5", "--step=2"]


def test_compare_sparse_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "sparse", "--seeds", "2", "--out", str(tmp_path), *SMALL]) == 0
    out = tmp_path / "sparse" / "report"
    text = capsys.readouterr().out
    assert "| b | mean, step γ | AdaBatch, step γ | mean, step γ·b |" in text
    assert (out / "loss_vs_samples.png").stat().st_size > 10_000
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == 2 and report["step_size"] == 2.0 and report["epochs"] == 0.5
    assert set(report["losses"]) == {"1", "8", "32", "128", "512"}
    assert all(len(v) == 2 for v in report["losses"]["8"].values())
    assert (out / "report.md").read_text().startswith("### sparse:")
    # an existing report is kept unless --overwrite
    assert main(["compare", "sparse", "--out", str(tmp_path), *SMALL]) == 1
    assert "--overwrite" in capsys.readouterr().err
    args = ["compare", "sparse", "--seeds", "1", "--out", str(tmp_path), "--overwrite", *SMALL]
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["seeds"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--policy.delta=0.1"], "the sparse suite takes --n, --d, --nnz, --epochs, --step"),
        (["--n=abc"], "--n must be a number (int), got 'abc'"),
        (["--epochs=0"], "--epochs must be > 0"),
        (["--methods", "adabatch"], "no methods to choose"),
    ],
)
def test_bad_sparse_options(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    assert main(["compare", "sparse", "--out", str(tmp_path), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sparse").exists()


def test_sparse_is_listed_and_has_no_single_runs(capsys: pytest.CaptureFixture) -> None:
    assert SUITES["sparse"].runner == "sparse" and not SUITES["sparse"].methods
    assert main(["list"]) == 0
    assert "\nsparse " in capsys.readouterr().out
    assert main(["run", "sparse/adabatch"]) != 0
    assert "sparse/adabatch" in capsys.readouterr().err


def test_options_are_not_taken_for_abbreviations(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # --n=… once matched --no-progress by prefix; sub-commands take no abbreviations now, so
    # --no-prog is an (unknown) override, not --no-progress. Tiny overrides keep a regression
    # (a real run) short.
    tiny = ["--epochs=1", "--data.num_train=200", "--data.num_test=50", "--data.image_size=8"]
    assert main(["run", "quick/sgd-small", "--out", str(tmp_path / "r"), *tiny, "--no-prog"]) == 1
    assert "no-prog" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
