"""The examples run and print finite statistics (they are the README's snippets)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_minimal_loop() -> None:
    spec = importlib.util.spec_from_file_location("minimal_loop", EXAMPLES / "minimal_loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log = module.main(steps=3, batch_size=16)
    assert [row["batch"] for row in log] == [16, 16, 16]
    for row in log:
        assert all(math.isfinite(v) for k, v in row.items() if k != "noise_scale")
        assert row["noise_scale"] > 0  # +inf when the unbiased ‖G‖² estimate is <= 0
        assert row["variance"] > 0 and row["diversity"] >= 1 / 16
