"""``benchmarks/sparse_adabatch.py`` runs end to end (its --quick size) and on a LIBSVM file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sparse_adabatch.py"


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_quick_run_writes_tables_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "sparse.json"
    text = _run("--quick", "--out", str(out))
    assert "| b | mean, step γ | AdaBatch, step γ | mean, step γ·b |" in text
    payload = json.loads(out.read_text())
    losses = payload["efficiency"]["losses"]
    assert set(losses) == {"1", "8", "32", "128", "512"}
    # at b = 1 the three rules are the same SGD run
    assert losses["1"]["mean"] == losses["1"]["adabatch"] == losses["1"]["mean_scaled"]
    # the claim the benchmark measures, already visible at this size
    assert losses["128"]["adabatch"][0] < losses["128"]["mean"][0]
    assert set(payload["parallel"]) == {
        f"{name}/{w}" for name in ("adabatch-128", "adabatch-2048", "hogwild") for w in (1, 2)
    }
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_libsvm_file(tmp_path: Path) -> None:
    sk = pytest.importorskip("sklearn.datasets")
    rng = np.random.default_rng(0)
    X = sp.random(1500, 800, density=0.02, format="csr", random_state=0)
    X.data[:] = 1.0
    y = (X @ rng.normal(size=800) > 0).astype(int)
    path = tmp_path / "tiny.svm"
    sk.dump_svmlight_file(X, y, str(path), zero_based=False)
    text = _run("--data", str(path), "--epochs", "0.5", "--out", str(tmp_path / "r.json"))
    assert f"data: {path} (1200 train / 300 test)" in text
