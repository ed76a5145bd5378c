"""Per-sample gradient statistics of ``nn.Linear`` without materialising b × P.

For an input aᵢ and output gradient δᵢ (hook scale), the weight gradient of sample i is
g̃ᵢ = δᵢ aᵢᵀ without a sequence dimension and g̃ᵢ = Σₜ δᵢₜ aᵢₜᵀ with one.

Without a sequence dimension (input b × d_in), the "ghost norm" (Goodfellow 2015; Li et al.
2021) gives everything from two b-vectors:

* ‖g̃ᵢ‖² = ‖δᵢ‖² (‖aᵢ‖² + 1)        (the +1 is the bias; drop it without one),
* qᵢ = ⟨g̃ᵢ, Σⱼ g̃ⱼ⟩, kept per parameter (weight part + bias part):
      = δᵢᵀ G_W aᵢ  +  δᵢᵀ g_b                         cost b·d_in·d_out ("direct"),
      = Σⱼ ⟨δᵢ, δⱼ⟩⟨aᵢ, aⱼ⟩  +  Σⱼ ⟨δᵢ, δⱼ⟩             cost b²·(d_in + d_out) ("Gram"),
  whichever is cheaper,
* Σᵢ g̃ᵢ ⊙ g̃ᵢ = (δ⊙δ)ᵀ (a⊙a) for the weight, Σᵢ δᵢ⊙δᵢ for the bias.

With a sequence dimension of length T, per-sample gradients are materialised with one batched
GEMM (b × d_out × T times b × T × d_in): it costs what the plain weight-gradient GEMM costs and
replaces it, since Σᵢ g̃ᵢ is the weight gradient. When the b × d_in × d_out block does not fit
the memory budget, the weight gradient comes from the plain GEMM and the statistics from the
cheaper of the Gram route (bT²(d_in + d_out), S2 only) and chunked materialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LayerCall, LayerResult, Need, RuleBase, reduce_per_sample

__all__ = ["GRAM_FACTOR", "LinearRule"]

# For S2 alone, take the Gram route when its extra flops bT²(d_in + d_out) are below this
# fraction of one weight-gradient GEMM (bT·d_in·d_out). On a 2-core CPU, for the benchmark's
# Transformer shapes (T = 64, d = 128..512), materialising won by 1.4–2× even where the Gram
# route had half the GEMM's flops, because the Gram route pays that GEMM too
# (benchmarks/layer_routes.py, BENCHMARKS.md).
GRAM_FACTOR = 0.25


def _as_sequence(t: Tensor) -> Tensor:
    """View (b, *, d) as (b, T, d)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


class LinearRule(RuleBase):
    """Rule for ``nn.Linear`` (and subclasses that keep its ``forward``)."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:
        """Materialised per-sample gradients of the trainable parameters of this call."""
        assert call.grad_output is not None
        a = _as_sequence(call.inputs[rows])
        d = _as_sequence(call.grad_output[rows])
        out = []
        for name in call.names:
            if name == "weight":
                out.append(d.transpose(1, 2) @ a)  # (m, d_out, d_in)
            else:
                out.append(d.sum(1))
        return out

    def compute(self, call: LayerCall, need: Need) -> LayerResult:  # noqa: D102
        assert call.grad_output is not None
        a, d = call.inputs, call.grad_output
        if a.dim() == 2:
            return self._ghost(call, a, d, need)
        a3, d3 = _as_sequence(a), _as_sequence(d)
        if a3.shape[1] == 1:
            return self._ghost(call, a3[:, 0], d3[:, 0], need)
        b, t, d_in = a3.shape
        d_out = d3.shape[2]
        # S2 alone: the Gram route costs bT²(d_in + d_out) on top of the weight-gradient GEMM
        # and writes nothing of size b·P; materialising costs no extra flops but writes and
        # re-reads the b × d_out × d_in block. P2 and M need the block (or another GEMM).
        gram_cheaper = t * (d_in + d_out) < GRAM_FACTOR * d_in * d_out
        block = b * sum(p.numel() for p in call.params) * call.params[0].element_size()
        if (need.inner or need.coords or not gram_cheaper) and block <= need.max_block_bytes:
            return reduce_per_sample(lambda rows: self.per_sample(call, rows), b, call.params, need)
        grads = self._grads(call, a3.reshape(b * t, d_in), d3.reshape(b * t, d_out))
        if gram_cheaper and not need.inner and not need.coords:
            return LayerResult(grads, self._gram_sq_norm(call, a3, d3))
        return reduce_per_sample(
            lambda rows: self.per_sample(call, rows), b, call.params, need, grads=grads
        )

    @staticmethod
    def _grads(call: LayerCall, a: Tensor, d: Tensor) -> list[Tensor]:
        return [d.t() @ a if name == "weight" else d.sum(0) for name in call.names]

    @staticmethod
    def _gram_sq_norm(call: LayerCall, a: Tensor, d: Tensor) -> Tensor:
        # ‖Σₜ δₜ aₜᵀ‖² = Σ_{t,s} ⟨δₜ, δₛ⟩⟨aₜ, aₛ⟩, and ‖Σₜ δₜ‖² = Σ_{t,s} ⟨δₜ, δₛ⟩.
        kd = d @ d.transpose(1, 2)
        total = kd.new_zeros(())
        for name in call.names:
            if name == "weight":
                total = total + (kd * (a @ a.transpose(1, 2))).sum()
            else:
                total = total + kd.sum()
        return total

    def _ghost(self, call: LayerCall, a: Tensor, d: Tensor, need: Need) -> LayerResult:
        has_w = "weight" in call.names
        has_b = "bias" in call.names
        grads = self._grads(call, a, d)
        # Row norms by a fused reduction (vecdot would materialise a ⊙ a first).
        sq_d = torch.linalg.vector_norm(d, dim=1).square_()  # ‖δᵢ‖²
        if has_w:
            # ‖g̃ᵢ‖² summed over weight and bias = ‖δᵢ‖² (‖aᵢ‖² + [bias]).
            factor = torch.linalg.vector_norm(a, dim=1).square_()
            if has_b:
                factor += 1.0
            sq = torch.dot(sq_d, factor)
        else:
            sq = sq_d.sum()

        inner = None
        if need.inner:
            b, d_in = a.shape
            d_out = d.shape[1]
            if has_w and d_in * d_out <= b * (d_in + d_out):
                # Direct: qᵢ^W = δᵢᵀ G_W aᵢ, qᵢ^b = δᵢᵀ g_b.
                inner = [
                    torch.linalg.vecdot(a @ g.t(), d) if name == "weight" else d @ g
                    for name, g in zip(call.names, grads, strict=True)
                ]
            else:
                # Gram: qᵢ^W = Σⱼ ⟨δᵢ, δⱼ⟩⟨aᵢ, aⱼ⟩, qᵢ^b = Σⱼ ⟨δᵢ, δⱼ⟩.
                kd = d @ d.t()
                inner = [
                    torch.linalg.vecdot(kd, a @ a.t()) if name == "weight" else kd.sum(1)
                    for name in call.names
                ]

        coords = None
        if need.coords:
            d2 = d * d
            coords = [d2.t() @ (a * a) if name == "weight" else d2.sum(0) for name in call.names]
        return LayerResult(grads, sq, inner, coords)
