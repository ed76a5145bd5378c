"""The critical-batch warm-up: whole doublings as the measured noise scale passes them."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch.utils.data import TensorDataset

import adabatch.policies.critical_warmup as warmup_module
from adabatch import AdaptiveLoader, BatchSizeScheduler
from adabatch.policies import make_policy, warmup_size
from adabatch.stats import NoiseEstimate


def test_the_docstring_examples() -> None:
    assert doctest.testmod(warmup_module).failed == 0


def test_warmup_sizes_by_hand() -> None:
    assert warmup_size(8, 15.9, 2.0) == 8  # the next doubling (16) not reached
    assert warmup_size(8, 16.0, 2.0) == 16
    assert warmup_size(8, 100.0, 2.0) == 64  # 64 ≤ 100 < 128
    assert warmup_size(8, 100.0, 3.0) == 72  # 8·3² ≤ 100 < 8·3³
    assert warmup_size(8, math.inf, 2.0) == math.inf
    assert math.isnan(warmup_size(8, math.nan, 2.0))


def test_the_batch_doubles_as_the_critical_batch_grows() -> None:
    policy = make_policy(
        "critical-batch-warmup", batch_size=8, interval=1, smoothing=0.0, estimator="two-batch",
        max_batch_size=512,
    )  # fmt: skip
    loader = AdaptiveLoader(TensorDataset(torch.arange(100_000)), 8, shuffle=False)
    scheduler = BatchSizeScheduler(policy, loader)
    it = iter(loader)
    sizes = []
    for critical in (5.0, 12.0, 17.0, 40.0, 70.0, 30.0, 200.0):
        (batch,) = next(it)
        sizes.append(len(batch))
        scheduler.observe(NoiseEstimate(critical, 1.0))  # B_simple = tr Σ / ‖G‖² = critical
        scheduler.step()
    # Decided after each step, so each size shows one step later; 30 never shrinks 64.
    assert sizes == [8, 8, 8, 16, 32, 64, 64]
    assert scheduler.batch_size == 128


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="growth must be > 1"):
        make_policy("critical-batch-warmup", batch_size=8, growth=1.0)
    with pytest.raises(ValueError, match="never shrinks"):
        make_policy("critical-batch-warmup", batch_size=8, monotone=False)
