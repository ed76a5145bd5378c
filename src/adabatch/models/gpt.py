"""`GPT`: a small decoder-only language model, and its next-token loss.

The blocks of `adabatch.models.transformer` (pre-LayerNorm, attention projections as
``nn.Linear``, so every parameter has a closed-form per-sample rule) with causal attention, a
token and a learned position embedding, and an untied output head: nanoGPT's layout at toy
size. ``GPT(vocab_size=256)`` is a byte-level model for `adabatch.datasets.text`.

`next_token_loss` is the mean cross-entropy over every target token of the batch. With
sequences of equal length (the text data sets' samples all have T targets) it is the mean
over samples of each sequence's token-mean loss, which is the per-sample loss whose gradients
the statistics use (``loss_reduction="mean"`` over sequences).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import _Block

__all__ = ["GPT", "next_token_loss"]


class GPT(nn.Module):
    """Token + position embeddings → ``layers`` causal pre-LN blocks → LayerNorm → Linear.

    Args:
        vocab_size: the number of token ids (256 for bytes).
        seq_len: the longest sequence (the position table's size).
        dim, heads, ff, layers: width, attention heads, MLP width, blocks.

    ``forward(tokens)`` maps ``B × T`` int64 ids (T ≤ seq_len) to ``B × T × vocab_size`` logits
    for the next token at every position.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        seq_len: int = 64,
        dim: int = 128,
        heads: int = 4,
        ff: int = 512,
        layers: int = 2,
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(seq_len, dim)
        self.blocks = nn.Sequential(*(_Block(dim, heads, ff, causal=True) for _ in range(layers)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:  # noqa: D102
        t = tokens.shape[1]
        if t > self.seq_len:
            raise ValueError(f"sequences of {t} tokens exceed the model's seq_len={self.seq_len}")
        # Contiguous (not an expanded view): some per-sample tools (Opacus) view the indices.
        positions = torch.arange(t, device=tokens.device).repeat(tokens.shape[0], 1)
        x = self.tokens(tokens) + self.positions(positions)
        return self.head(self.ln(self.blocks(x)))


def next_token_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    r"""The next-token cross-entropy, summed over real tokens and divided by ``B × T``.

    ``logits``: ``B × T × V``; ``targets``: ``B × T``, padding positions ``ignore_index``.

        L = (1/B) Σᵢ sᵢ,   sᵢ = (1/T) Σ_{t : yᵢₜ real} −log softmax(zᵢₜ)[yᵢₜ]

    Without padding this is the mean over all B·T tokens. With sequences of variable length
    Tᵢ it is a mean over *sequences* of sᵢ, in which each sequence weighs by its tokens
    (sᵢ is Tᵢ/T times its own token mean). This reduction is chosen because it is a mean
    over samples: micro-batches, DDP shares and the per-sample gradient ∇sᵢ the statistics
    read are exact. (The mean over the batch's ΣTᵢ real tokens instead divides by a number
    that depends on the whole batch, so one sequence's gradient is not defined on its own;
    it equals this loss × B·T/ΣTᵢ, the batch's fill ratio inverted.)
    """
    flat = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction="sum"
    )
    return flat / targets.numel()
