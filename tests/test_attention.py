"""``nn.MultiheadAttention`` and torch's Transformer layers: exact, without the fallback.

Against the reference engine in float64 (every statistic) and an untracked backward (``p.grad``):
self- and cross-attention, packed and separate (``kdim``/``vdim``) projections, with and without
biases, both layouts, boolean and additive attention masks, key padding masks, attention weights
returned per head; ``nn.TransformerEncoder`` and a decoder layer in either layout.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from _compare import check
from adabatch.stats import GradStatsTracker

E, L, S = 8, 5, 4


class Attend(nn.Module):
    """Batch-first outside; the attention in the layout and the call asked for."""

    def __init__(self, *, batch_first: bool, cross: bool, call: dict[str, Any], **options: Any):
        super().__init__()
        self.batch_first, self.cross, self.call = batch_first, cross, call
        kv = options.pop("kv_dim", E)
        self.memory = nn.Linear(3, kv)
        self.embed = nn.Linear(3, E)
        self.attn = nn.MultiheadAttention(E, 2, batch_first=batch_first, **options)
        self.head = nn.Linear(E, 3)

    def forward(self, x: Tensor) -> Tensor:  # (b, L, 3)
        q = self.embed(x)
        kv = self.memory(x[:, :S]) if self.cross else q
        if not self.batch_first:
            q, kv = q.transpose(0, 1), kv.transpose(0, 1)
        out, weights = self.attn(q, kv, kv, **self.call)
        out = out if self.batch_first else out.transpose(0, 1)
        pooled = out.mean(1)
        if weights is not None:  # the returned attention weights feed the loss too
            first = weights[..., 0]  # the weight on the first key: not constant
            pooled = pooled + first.reshape(first.shape[0], -1).mean(1, keepdim=True)
        return self.head(pooled)


def _masks(b: int) -> dict[str, dict[str, Any]]:
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    additive = torch.randn(L, L, dtype=torch.float64)
    padding = torch.zeros(b, L, dtype=torch.bool)
    padding[0, -2:] = True  # the first sample's last two keys are padding
    return {
        "plain": {"need_weights": False},
        "causal-bool": {"attn_mask": causal, "need_weights": False},
        "additive": {"attn_mask": additive, "need_weights": False},
        "padding": {"key_padding_mask": padding, "need_weights": False},
        "weights-per-head": {"need_weights": True, "average_attn_weights": False},
        "weights-averaged": {"need_weights": True},
    }


def _check(model: nn.Module, x: Tensor, y: Tensor) -> None:
    check(model, x, y, allow_fallback=False)


@pytest.mark.parametrize("mask", list(_masks(1)))
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
def test_self_attention(mask, batch_first) -> None:
    torch.manual_seed(0)
    b = 4
    model = Attend(batch_first=batch_first, cross=False, call=_masks(b)[mask]).double()
    x = torch.randn(b, L, 3, dtype=torch.float64)  # L = 5 ≠ b, and T == b below
    _check(model, x, torch.randint(0, 3, (b,)))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bias": False},
        {"kdim": 6, "vdim": 6, "kv_dim": 6},
        {"kdim": 6, "vdim": 6, "kv_dim": 6, "bias": False},
    ],
    ids=["packed", "no-bias", "kdim-vdim", "kdim-vdim-no-bias"],
)
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
def test_cross_attention(options, batch_first) -> None:
    torch.manual_seed(1)
    b = 3
    model = Attend(batch_first=batch_first, cross=True, call={"need_weights": False}, **options)
    x = torch.randn(b, L, 3, dtype=torch.float64)
    _check(model.double(), x, torch.randint(0, 3, (b,)))


class Encoder(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(20, E)
        layer = nn.TransformerEncoderLayer(E, 2, 16, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(E, 3)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)
        h = self.encoder(h if self.batch_first else h.transpose(0, 1))
        return self.head((h if self.batch_first else h.transpose(0, 1)).mean(1))


@pytest.mark.parametrize("b", [1, 2, 7])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
def test_transformer_encoder(batch_first, b) -> None:
    torch.manual_seed(2)
    model = Encoder(batch_first).double()
    tokens = torch.randint(0, 20, (b, 7))  # T = 7 = b for the last case
    _check(model, tokens, torch.randint(0, 3, (b,)))


def test_transformer_decoder_layer_with_memory() -> None:
    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(3, E)
            self.layer = nn.TransformerDecoderLayer(E, 2, 16, dropout=0.0, batch_first=True)
            self.head = nn.Linear(E, 3)

        def forward(self, x: Tensor) -> Tensor:
            h = self.embed(x)
            causal = nn.Transformer.generate_square_subsequent_mask(L, dtype=torch.float64)
            return self.head(self.layer(h, h[:, :S], tgt_mask=causal).mean(1))

    torch.manual_seed(3)
    _check(Decoder().double(), torch.randn(3, L, 3, dtype=torch.float64), torch.tensor([0, 1, 2]))


def test_unsupported_attention_options_are_refused() -> None:
    with pytest.raises(ValueError, match="add_bias_kv or add_zero_attn"):
        GradStatsTracker(nn.MultiheadAttention(E, 2, add_bias_kv=True))
    attn = nn.MultiheadAttention(E, 2, batch_first=True).double()
    with GradStatsTracker(attn), pytest.raises(ValueError, match="unbatched query of shape"):
        q = torch.randn(L, E, dtype=torch.float64)
        attn(q, q, q)
    assert all(p.requires_grad for p in attn.parameters())
