"""RNN, GRU and LSTM under the hooks engine: exact statistics, every output tracked, clear refusals.

Regression: an LSTM classifier reading ``h_n`` (the usual pattern) used to get *no gradient at
all* for the LSTM's weights with the tracker attached (only the first output was tapped, and
``h_n`` was computed with the weights frozen), so the Trainer silently trained the head only.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from _compare import assert_grads_close, check
from _models import RecurrentClassifier
from adabatch.stats import GradStatsTracker
from adabatch.stats.rules.recurrent import recurrent_forward


def _data(b: int = 5, steps: int = 6):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(b, steps, 3, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (b,), generator=g)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_h_n_readers_get_the_untracked_gradient_with_a_persistent_tracker(cell) -> None:
    torch.manual_seed(0)
    model = RecurrentClassifier(cell).double()
    plain = copy.deepcopy(model)
    x, y = _data()
    tracker = GradStatsTracker(model, loss_reduction="mean", inner_products=True)
    for _ in range(2):  # two steps: nothing is left frozen or stale after the first
        model.zero_grad()
        plain.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        nn.functional.cross_entropy(plain(x), y).backward()
        tracker.pop()
        for p in model.rnn.parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0
        assert_grads_close(model, plain)
    tracker.remove()


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_the_recomputed_recurrence_equals_torchs_kernel(mode, batch_first) -> None:
    """`recurrent_forward` with shared weights is the module's own forward (hx given or not)."""
    cell = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(mode, nn.RNN)
    options = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    torch.manual_seed(1)
    module = cell(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, **options)
    module = module.double()
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    h0 = torch.randn(4, 5, 4, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if mode == "LSTM" else h0
    weights = dict(module.named_parameters())
    for state in (None, hx):
        expected = module(x, state)
        actual = recurrent_forward(module, x, state, weights)
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_an_initial_state_from_another_layer_gets_its_gradient() -> None:
    """h₀ computed by an encoder: the recomputation keeps it in the graph."""

    class EncoderDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encode = nn.Linear(3, 4)
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.head = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            h0 = torch.tanh(self.encode(x[:, 0])).unsqueeze(0).contiguous()
            out, _ = self.rnn(x, h0)
            return self.head(out[:, -1])

    torch.manual_seed(2)
    x, y = _data()
    stats = check(EncoderDecoder(), x, y)
    assert torch.count_nonzero(stats.grad_sum["encode.weight"]) > 0


def test_frozen_recurrent_weights_are_left_out() -> None:
    torch.manual_seed(3)
    model = RecurrentClassifier(nn.LSTM).double()
    model.rnn.weight_hh_l0.requires_grad_(False)
    x, y = _data()
    assert "rnn.weight_hh_l0" not in check(model, x, y).grad_sum


def test_packed_sequences_are_refused_clearly() -> None:
    rnn = nn.LSTM(3, 4, batch_first=True).double()
    x, _ = _data()
    packed = pack_padded_sequence(x, torch.tensor([6, 5, 4, 3, 2]), batch_first=True)
    with GradStatsTracker(rnn), pytest.raises(TypeError, match="packed sequences are not"):
        rnn(packed)
    # Nothing was left frozen by the refused call.
    assert all(p.requires_grad for p in rnn.parameters())


def test_unbatched_input_dropout_and_projections_are_refused() -> None:
    x, _ = _data()
    rnn = nn.GRU(3, 4).double()
    with GradStatsTracker(rnn), pytest.raises(ValueError, match="unbatched input of shape"):
        rnn(x[0])
    dropped = nn.LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=True).double()
    with GradStatsTracker(dropped), pytest.raises(ValueError, match=r"dropout=0.5\) in training"):
        dropped(x)
    with pytest.raises(ValueError, match="proj_size=2 has no per-sample rule"):
        GradStatsTracker(nn.LSTM(3, 4, proj_size=2))


def test_a_batch_on_the_wrong_dimension_is_refused() -> None:
    """An inner batch_first=False LSTM given the model's batch-first tensor: refused."""

    class Wrong(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 4)  # batch_first=False, fed (b, T, d)

        def forward(self, x: Tensor) -> Tensor:
            return self.rnn(x)[0].sum(1)

    model = Wrong().double()
    x, _ = _data(b=5, steps=6)
    with GradStatsTracker(model), pytest.raises(ValueError, match=r"rnn \(LSTM\): changing"):
        model(x)
    # Without the layout probe, the size check catches it when the sizes differ.
    tracker = GradStatsTracker(model, check_layout=False)
    with tracker, pytest.raises(ValueError, match="received a batch of 6"):
        model(x)


def test_a_seq_first_rnn_as_the_model_takes_its_batch_from_dimension_1() -> None:
    """The root itself is an LSTM(batch_first=False): (T, b, d) with T == b is not ambiguous."""
    torch.manual_seed(4)
    rnn = nn.LSTM(3, 4).double()
    x = torch.randn(5, 5, 3, dtype=torch.float64)  # (T, b, d), T == b
    tracker = GradStatsTracker(rnn, loss_reduction="sum")
    rnn(x)[0].pow(2).sum().backward()
    stats = tracker.pop()
    tracker.remove()
    # The reference, one sample (one column of the batch) at a time.
    sq = 0.0
    for i in range(5):
        grads = torch.autograd.grad(rnn(x[:, i : i + 1])[0].pow(2).sum(), list(rnn.parameters()))
        sq += sum(float(g.pow(2).sum()) for g in grads)
    assert stats.num_samples == 5
    assert float(stats.sum_sq_norms) == pytest.approx(sq, rel=1e-10)


def test_a_module_returning_nested_tensors_is_refused_not_silently_wrong() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x: Tensor):
            return x * self.weight, (x.sum(1), x * 2 * self.weight)

    model = Pair().double()
    x, _ = _data()
    with pytest.warns(UserWarning, match="no closed-form rule"):
        tracker = GradStatsTracker(model)
    with tracker, pytest.raises(TypeError, match="returns several tensors"):
        model(x[:, 0])
