"""A pre-LayerNorm Transformer encoder classifier built from nn.Linear, nn.LayerNorm, nn.Embedding.

Attention projections are ``nn.Linear`` modules (unlike ``nn.MultiheadAttention``, which uses
its projection weights functionally), so every parameter has an exact closed-form per-sample
rule in the hooks engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        self.causal = causal
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int, causal: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, heads, causal)
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff)
        self.ff2 = nn.Linear(ff, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


class TransformerClassifier(nn.Module):
    """Token + position embeddings → ``layers`` pre-LN blocks → LayerNorm → mean pool → Linear."""

    def __init__(
        self,
        vocab_size: int = 1000,
        seq_len: int = 64,
        dim: int = 128,
        heads: int = 4,
        ff: int = 512,
        layers: int = 2,
        num_classes: int = 10,
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(seq_len, dim)
        self.blocks = nn.Sequential(*(_Block(dim, heads, ff) for _ in range(layers)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:  # noqa: D102
        # Contiguous (not an expanded view): some per-sample tools (Opacus) view the indices.
        positions = torch.arange(tokens.shape[1], device=tokens.device).repeat(tokens.shape[0], 1)
        x = self.tokens(tokens) + self.positions(positions)
        return self.head(self.ln(self.blocks(x)).mean(1))
