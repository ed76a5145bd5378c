"""Mixed precision and compiled models under the hooks engine.

* ``torch.autocast`` (bf16 on the CPU): the layers run in bf16, the parameters stay float32.
  The statistics are computed in float32 (NOTE [autocast] in the hooks engine) and agree with
  the reference engine run under the same autocast to bf16's tolerance; ``p.grad`` agrees with
  an untracked backward to the same tolerance (the rules form the weight gradients in float32
  from the bf16 activations, where torch's kernels accumulate in bf16). Regression: a Linear
  or a convolution under autocast used to raise a dtype error.
* ``torch.compile``: the hooks stay in the compiled module's calls; the statistics are exact.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from _compare import assert_grads_close, assert_stats_close
from _models import RecurrentClassifier, SeqClassifier, SmallCNN, mlp
from adabatch.stats import GradStatsTracker, compute_stats

BF16_RTOL = 3e-2

CASES = {
    "mlp": (mlp, lambda g: torch.randn(6, 5, generator=g)),
    "cnn-groupnorm": (SmallCNN, lambda g: torch.randn(6, 3, 6, 6, generator=g)),
    "embedding-layernorm": (SeqClassifier, lambda g: torch.randint(0, 11, (6, 7), generator=g)),
    # (torch's own LSTM kernel has no bf16 autocast path on the CPU: oneDNN refuses it.)
    "gru": (lambda: RecurrentClassifier(nn.GRU), lambda g: torch.randn(6, 5, 3, generator=g)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_autocast_statistics_are_float32_and_close_to_the_reference(name) -> None:
    make, data = CASES[name]
    torch.manual_seed(0)
    model = make()
    g = torch.Generator().manual_seed(1)
    x, y = data(g), torch.randint(0, 3, (6,), generator=g)
    options = dict(inner_products=True, coordinates=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = compute_stats(
            copy.deepcopy(model), nn.CrossEntropyLoss(), x, y, engine="reference", **options
        )
        plain = copy.deepcopy(model)
        nn.functional.cross_entropy(plain(x), y).backward()
        actual = compute_stats(model, nn.CrossEntropyLoss(), x, y, **options)
    for name_, g_sum in actual.grad_sum.items():
        assert g_sum.dtype == torch.float32, name_
    assert_stats_close(actual, expected, rtol=BF16_RTOL)
    assert_grads_close(model, plain, rtol=BF16_RTOL)


def test_a_compiled_model_keeps_exact_statistics() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = torch.randn(6, 3, 6, 6), torch.randint(0, 4, (6,))
    expected = compute_stats(
        copy.deepcopy(model), nn.CrossEntropyLoss(), x, y, engine="reference", inner_products=True
    )
    plain = copy.deepcopy(model)
    nn.functional.cross_entropy(plain(x), y).backward()
    tracker = GradStatsTracker(model, inner_products=True)
    compiled = torch.compile(model)
    for _ in range(2):  # the second call runs the compiled code
        model.zero_grad()
        nn.functional.cross_entropy(compiled(x), y).backward()
        actual = tracker.pop()
    tracker.remove()
    assert_stats_close(actual, expected, rtol=1e-5)  # float32
    assert_grads_close(model, plain, rtol=1e-5)
