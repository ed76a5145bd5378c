"""Per-sample gradient statistics of ``nn.Embedding`` without a b × V × D block.

Sample i's gradient touches only the rows of the tokens it contains: row v of g̃ᵢ is
rᵢᵥ = Σ_{t: xᵢₜ = v} δᵢₜ. One ``unique`` over the keys (i, v) and one ``index_add`` give every
non-zero row of every sample (at most b·T rows of width D), from which

* ‖g̃ᵢ‖² = Σᵥ ‖rᵢᵥ‖²,
* qᵢ = Σᵥ ⟨rᵢᵥ, G[v]⟩ with G the summed gradient (a gather of b·T rows),
* Σᵢ g̃ᵢ ⊙ g̃ᵢ = Σ_{(i,v)} rᵢᵥ ⊙ rᵢᵥ scattered into row v,

all in O(b·T·D). Tokens equal to ``padding_idx`` receive no gradient, as in PyTorch.
``sparse=True`` embeddings get a sparse gradient, as a plain backward gives them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import LayerCall, LayerResult, Need, RuleBase

__all__ = ["EmbeddingRule"]


class EmbeddingRule(RuleBase):
    """Rule for ``nn.Embedding``."""

    def check(self, module: nn.Module) -> None:  # noqa: D102 - see LayerRule
        assert isinstance(module, nn.Embedding)
        if module.scale_grad_by_freq:
            raise TypeError(
                "nn.Embedding(scale_grad_by_freq=True) scales each token's gradient by its "
                "frequency in the whole batch, which couples the samples, so per-sample "
                "gradients are undefined; construct the embedding with scale_grad_by_freq=False"
            )

    def _rows(self, call: LayerCall, rows: slice) -> tuple[Tensor, Tensor, Tensor]:
        """Per (sample, token) summed gradient rows, their token ids and sample ids."""
        module = call.module
        assert isinstance(module, nn.Embedding) and call.grad_output is not None
        idx = call.inputs[rows]
        m = idx.shape[0]
        dim = module.embedding_dim
        vocab = module.num_embeddings
        flat_idx = idx.reshape(m, -1)
        flat_d = call.grad_output[rows].reshape(m, -1, dim)
        if module.padding_idx is not None:
            keep = flat_idx != module.padding_idx
            flat_d = flat_d * keep.unsqueeze(-1).to(flat_d.dtype)
        sample = torch.arange(m, device=idx.device).unsqueeze(1)
        keys = (sample * vocab + flat_idx).reshape(-1)
        uniq, inverse = torch.unique(keys, return_inverse=True)
        r = flat_d.new_zeros(uniq.numel(), dim).index_add_(0, inverse, flat_d.reshape(-1, dim))
        return r, uniq % vocab, uniq // vocab

    def _grad(self, module: nn.Embedding, r: Tensor, tokens: Tensor) -> Tensor:
        shape = (module.num_embeddings, module.embedding_dim)
        if module.sparse:
            return torch.sparse_coo_tensor(tokens.unsqueeze(0), r, shape, check_invariants=False)
        return r.new_zeros(shape).index_add_(0, tokens, r)

    def compute(self, call: LayerCall, need: Need) -> LayerResult:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.Embedding)
        b = call.batch_size
        r, tokens, samples = self._rows(call, slice(0, b))
        grad = self._grad(module, r, tokens)
        sq = torch.dot(r.reshape(-1), r.reshape(-1))
        inner = None
        if need.inner:
            dense = grad.to_dense() if grad.is_sparse else grad
            per_row = (r * dense.index_select(0, tokens)).sum(1)
            inner = [per_row.new_zeros(b).index_add_(0, samples, per_row)]  # the weight only
        coords = None
        if need.coords:
            coords = [self._grad(module, r * r, tokens)]
        return LayerResult([grad], sq, inner, coords)

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:
        """Dense per-sample gradients (m, V, D): only for weights shared with other calls."""
        module = call.module
        assert isinstance(module, nn.Embedding)
        r, tokens, samples = self._rows(call, rows)
        m = rows.stop - rows.start
        out = r.new_zeros(m, module.num_embeddings, module.embedding_dim)
        out[samples, tokens] = r
        return [out]
