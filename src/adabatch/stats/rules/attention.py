"""Per-sample gradients of ``nn.MultiheadAttention``: the forward re-run, its projections in view.

``nn.MultiheadAttention`` computes its four projections inside one functional call, so no hook
sees them. The rule recomputes the layer in plain tensor operations — the in-projection (packed
``in_proj_weight`` or separate ``q/k/v_proj_weight``), the scaled dot products with the masks,
softmax, dropout, the out-projection — and watches the gradient δ of each projection's output.
Each projection is a Linear over the sequence, so the per-sample gradient of its weight is
δᵢᵀ aᵢ (one batched GEMM over the time steps, as the Linear rule's sequence route) and of its
bias Σₜ δᵢₜ; with one packed weight and one input (self-attention) the three projections are
one GEMM. The recomputed output replaces the module's own (equal to rounding); the gradients
reach the parameters through it by ordinary autograd.

Handled: ``batch_first`` either way, packed or separate projections (``kdim``/``vdim``), with
or without bias, ``attn_mask`` (2-D or 3-D, boolean or additive), ``key_padding_mask``,
``need_weights`` and ``average_attn_weights``. Refused with a message: ``add_bias_kv`` and
``add_zero_attn``, unbatched (2-D) inputs. Attention dropout in training mode draws its own
masks (the same distribution as the module's, not the same draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import OwnedForwardRule, PerSample

__all__ = ["AttentionRule"]


def _arguments(args: tuple, kwargs: dict) -> dict[str, Any]:
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


class AttentionRule(OwnedForwardRule):
    """The hooks engine's rule for ``nn.MultiheadAttention``: it owns the forward."""

    def check(self, module: nn.Module) -> None:  # noqa: D102
        if module.bias_k is not None or module.add_zero_attn:  # type: ignore[union-attr]
            raise ValueError(
                "adabatch: MultiheadAttention with add_bias_kv or add_zero_attn has no "
                "per-sample rule; build it without them or use engine='reference'"
            )

    def batch_size_of(self, module: nn.Module, args: tuple, kwargs: dict) -> int:  # noqa: D102
        query = _arguments(args, kwargs)["query"]
        if not isinstance(query, Tensor) or query.dim() != 3:
            shape = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise ValueError(
                f"adabatch: MultiheadAttention received an unbatched query of shape {shape}; "
                "the per-sample statistics need a batch (3-D inputs)"
            )
        return query.shape[self.batch_dim(module)]

    def owned_forward(
        self,
        module: nn.Module,
        args: tuple,
        kwargs: dict,
        weights: dict[str, Tensor],
        trainable: frozenset[str],
        on_blocks: Callable[[PerSample], None],
    ) -> Any:
        """The module's ``(output, weights)``, watched (see the module docstring)."""
        mha: Any = module
        a = _arguments(args, kwargs)
        query, key, value = a["query"], a["key"], a["value"]
        same = query is key and key is value
        if not mha.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, length, embed = query.shape
        src = key.shape[1]
        heads = mha.num_heads
        head_dim = embed // heads
        bias = weights.get("in_proj_bias")
        b_q, b_k, b_v = bias.chunk(3) if bias is not None else (None, None, None)

        watched: list[tuple[str, Tensor, Tensor]] = []  # (projection, its output, its input)
        if mha._qkv_same_embed_dim and same:
            qkv = F.linear(query, weights["in_proj_weight"], bias)
            watched.append(("qkv", qkv, query))
            q, k, v = qkv.chunk(3, dim=-1)
        else:
            if mha._qkv_same_embed_dim:
                w_q, w_k, w_v = weights["in_proj_weight"].chunk(3)
            else:
                w_q, w_k, w_v = (weights[f"{n}_proj_weight"] for n in "qkv")
            q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
            watched += [("q", q, query), ("k", k, key), ("v", v, value)]

        q = q.reshape(b, length, heads, head_dim).transpose(1, 2)
        k = k.reshape(b, src, heads, head_dim).transpose(1, 2)
        v = v.reshape(b, src, heads, head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # (b, h, L, S)
        scores = _masked(scores, a.get("attn_mask"), a.get("key_padding_mask"), b, heads)
        attn = torch.softmax(scores, dim=-1)
        if mha.training and mha.dropout > 0:
            attn = F.dropout(attn, p=mha.dropout)
        context = (attn @ v).transpose(1, 2).reshape(b, length, embed)
        out = F.linear(context, weights["out_proj.weight"], weights.get("out_proj.bias"))
        watched.append(("out", out, context))

        _watch(watched, trainable, on_blocks)
        output = out if mha.batch_first else out.transpose(0, 1)
        if not a.get("need_weights", True):
            return output, None
        return output, attn.mean(dim=1) if a.get("average_attn_weights", True) else attn


def _masked(
    scores: Tensor, attn_mask: Tensor | None, padding: Tensor | None, b: int, heads: int
) -> Tensor:
    """Scores with ``attn_mask`` (L, S) or (b·h, L, S) and ``key_padding_mask`` (b, S) applied."""
    for mask, shape in ((attn_mask, None), (padding, (b, 1, 1, -1))):
        if mask is None:
            continue
        if shape is not None:
            mask = mask.reshape(shape)
        elif mask.dim() == 3:
            mask = mask.reshape(b, heads, *mask.shape[1:])
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    return scores


def _watch(
    watched: list[tuple[str, Tensor, Tensor]],
    names: frozenset[str],
    on_blocks: Callable[[PerSample], None],
) -> None:
    """Hooks on the projections' outputs; the per-sample blocks once every δ has arrived."""
    deltas: dict[str, Tensor] = {}
    inputs = {name: x.detach() for name, _, x in watched}

    def per_sample(rows: slice) -> dict[str, Tensor]:
        def weight(proj: str) -> Tensor:
            return deltas[proj][rows].transpose(1, 2) @ inputs[proj][rows]  # Σₜ δₜ aₜᵀ

        def bias(proj: str) -> Tensor:
            return deltas[proj][rows].sum(1)

        out: dict[str, Tensor] = {}
        packed = "qkv" in deltas
        if "in_proj_weight" in names:
            parts = [weight("qkv")] if packed else [weight(p) for p in "qkv"]
            out["in_proj_weight"] = parts[0] if packed else torch.cat(parts, dim=1)
        for p in "qkv":
            if f"{p}_proj_weight" in names:
                out[f"{p}_proj_weight"] = weight(p)
        if "in_proj_bias" in names:
            out["in_proj_bias"] = bias("qkv") if packed else torch.cat([bias(p) for p in "qkv"], 1)
        if "out_proj.weight" in names:
            out["out_proj.weight"] = weight("out")
        if "out_proj.bias" in names:
            out["out_proj.bias"] = bias("out")
        return out

    live = [(name, tensor) for name, tensor, _ in watched if tensor.requires_grad]

    def watch(name: str) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            deltas[name] = grad
            if len(deltas) == len(live):
                on_blocks(per_sample)

        return hook

    for name, tensor in live:
        tensor.register_hook(watch(name))
