"""The batch in dimension 1: layers inside ``batch_first=False`` modules (NOTE [layout]).

Regression: a sequence-first layer whose sequence length equals the batch size passed the
batch-size check and gave wrong statistics (dimension 0 was taken for the batch). Now every
layer called inside a module built with ``batch_first=False`` takes dimension 1 for the batch,
and a layer there without a closed form is refused instead of falling back wrongly.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from _compare import check
from adabatch.stats import GradStatsTracker, compute_stats


class Model(nn.Module):
    """Batch-first outside; a sequence-first Transformer layer inside (attention, MLP, norms)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.layer = nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0, batch_first=False)
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:  # (b, T, 3)
        h = self.layer(self.embed(x).transpose(0, 1))  # (T, b, E) inside the layer
        return self.head(h.transpose(0, 1).mean(1))


@pytest.mark.parametrize("steps", [4, 7], ids=["T-equals-b", "T-differs"])
def test_layers_inside_a_seq_first_module_take_the_batch_from_dimension_1(steps) -> None:
    torch.manual_seed(0)
    check(Model(), torch.randn(4, steps, 3), torch.randint(0, 2, (4,)))


class Scale(nn.Module):
    """A layer with parameters and no closed-form rule."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain


def test_a_layer_without_a_rule_in_a_seq_first_layer_is_refused_even_when_seq_len_equals_b():
    layer = nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0, batch_first=False).double()
    layer.norm1 = Scale(6).double()  # the fallback cannot take the batch from dimension 1
    x = torch.randn(4, 4, 6, dtype=torch.float64)  # (T, b, E) with T == b
    with pytest.warns(UserWarning, match="no closed-form rule"):
        tracker = GradStatsTracker(layer)
    with tracker, pytest.raises(ValueError, match=r"batch in dimension 1 \(batch_first=False\)"):
        layer(x)
    assert all(p.requires_grad for p in layer.parameters())  # nothing left frozen


class SeqFirstByHand(nn.Module):
    """The model's own code hands a Linear a (T, b, E) tensor: no layer says so."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:  # (b, T, 3)
        h = self.embed(x).transpose(0, 1)  # (T, b, E)
        h = torch.tanh(self.mix(h)).cumsum(0)  # a sequence op along T, batch in dimension 1
        return self.head(h.transpose(0, 1).mean(1))


def test_a_hand_made_seq_first_layer_is_caught_by_the_layout_probe_when_seq_len_equals_b():
    """Regression: T == b passed every size check and gave wrong statistics silently."""
    torch.manual_seed(0)
    model = SeqFirstByHand().double()
    x = torch.randn(4, 4, 3, dtype=torch.float64)  # T == b == 4
    y = torch.randint(0, 2, (4,))
    with pytest.raises(ValueError, match=r"mix \(Linear\): changing sample 0"):
        compute_stats(model, nn.CrossEntropyLoss(), x, y)
    # The probe is what catches it: without it, the statistics would be silently wrong.
    tracker = GradStatsTracker(model, check_layout=False)
    nn.functional.cross_entropy(model(x), y).backward()
    wrong = tracker.pop()
    tracker.remove()
    expected = compute_stats(copy.deepcopy(model), nn.CrossEntropyLoss(), x, y, engine="reference")
    assert abs(float(wrong.sum_sq_norms) / float(expected.sum_sq_norms) - 1) > 1e-3
