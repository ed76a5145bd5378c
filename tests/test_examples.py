"""The examples run and print finite statistics (they are the README's snippets)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minimal_loop() -> None:
    log = load("minimal_loop").main(steps=3, batch_size=16)
    assert [row["batch"] for row in log] == [16, 16, 16]
    for row in log:
        assert all(math.isfinite(v) for k, v in row.items() if k != "noise_scale")
        assert row["noise_scale"] > 0  # +inf when the unbiased ‖G‖² estimate is <= 0
        assert row["variance"] > 0 and row["diversity"] >= 1 / 16


def test_resizing_loader() -> None:
    """Every epoch sees all 2048 samples once, in half as many steps as the one before."""
    log = load("resizing_loader").main(epochs=4, batch_size=32)
    assert [row["batch"] for row in log] == [32, 64, 128, 256]
    assert [row["steps"] for row in log] == [64, 32, 16, 8]
    assert all(row["samples"] == 2048 for row in log)
    assert all(1 / row["batch"] <= row["diversity"] <= 1 for row in log)


def test_adaptive_batch() -> None:
    """The norm test grows the batch; the LR follows √(B/B₀); no epoch skips a sample."""
    log = load("adaptive_batch").main(epochs=3)
    batches = [row["batch"] for row in log]
    assert batches == sorted(batches) and batches[0] > 16 and batches[-1] <= 1024
    for row in log:
        assert math.isclose(row["lr"], 0.05 * math.sqrt(row["batch"] / 16), rel_tol=1e-12)
        assert math.isfinite(row["T"]) and row["T"] > 0


def test_lightning_example() -> None:
    """The callback grows the batch inside Lightning and the model still learns the digits."""
    result = load("lightning_adaptive").main(epochs=6)
    assert 32 < result["final_batch"] <= 512
    assert result["val_acc"] > 0.85


def test_hf_trainer_example() -> None:
    """A tiny GPT-2 in transformers.Trainer: the batch grows, the held-out loss drops."""
    result = load("hf_trainer_adaptive").main(epochs=1, n=512)
    assert 16 < result["final_batch"] <= 256
    assert math.log(48) > result["eval_loss"] > 0
