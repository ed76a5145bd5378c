"""The functorch engine: ``torch.func.vmap`` over ``torch.func.grad`` of the per-sample loss.

Materialises the b × P per-sample gradients of the whole model (in chunks of ``chunk_size``
samples if given), so it is exact for any model whose forward is a pure function of
(parameters, buffers, one sample) — no in-place buffer updates, hence no training-mode
BatchNorm — but costs b × P memory and, on linear layers, far more time than the hooks engine.
``p.grad`` receives Σᵢgᵢ/b (mean) or Σᵢgᵢ (sum), accumulated like a plain backward.
Random layers draw independent randomness per sample (``randomness="different"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .._checks import check_batchnorm_mode, check_loss
from ..rules.recurrent import RECURRENT_TYPES
from ..summary import GradStats
from ._dense import stats_from_per_sample

__all__ = ["functorch_stats"]


def functorch_stats(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Any,
    *,
    loss_reduction: str = "mean",
    inner_products: bool = False,
    coordinates: bool = False,
    batchnorm: str = "error",
    chunk_size: int | None = None,
) -> GradStats:
    """Statistics from ``vmap(grad(per-sample loss))`` (see module docstring)."""
    if check_batchnorm_mode(model, batchnorm):
        raise ValueError(
            "the functorch engine cannot reproduce batchnorm='approximate' (vmap normalises "
            "each sample on its own); use engine='hooks' or engine='reference'"
        )
    recurrent = [type(m).__name__ for m in model.modules() if isinstance(m, RECURRENT_TYPES)]
    if recurrent:
        raise TypeError(
            f"the functorch engine cannot run {recurrent[0]}: torch.func.vmap has no batching "
            "rule for torch's recurrent kernels; use engine='hooks' (exact, with a rule for "
            "RNN/GRU/LSTM) or engine='reference'"
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    trainable = tuple(p.detach() for _, p in named)
    constants: dict[str, Tensor] = {
        n: p.detach() for n, p in model.named_parameters() if not p.requires_grad
    }
    constants.update(dict(model.named_buffers()))
    has_targets = isinstance(targets, Tensor)

    def sample_loss(values: tuple[Tensor, ...], x: Tensor, y: Any) -> Tensor:
        state = {**constants, **dict(zip(names, values, strict=True))}
        out = functional_call(model, state, (x.unsqueeze(0),))
        y1 = y.unsqueeze(0) if has_targets else targets
        loss = loss_fn(out, y1)
        if isinstance(loss, Tensor) and loss.dim() != 0:
            # A loss left unreduced still has one element for one sample: check the shape.
            raise ValueError(
                f"loss_fn must return the batch loss reduced to a scalar, got shape "
                f"{tuple(loss.shape)} for a batch of one sample; reduce it over the batch "
                f"(reduction='mean' or 'sum') and declare that reduction with loss_reduction=..."
            )
        return check_loss(loss, require_grad=False)

    per_sample_grad = vmap(
        grad(sample_loss),
        in_dims=(None, 0, 0 if has_targets else None),
        randomness="different",
        chunk_size=chunk_size,
    )
    stacked = per_sample_grad(trainable, inputs, targets if has_targets else None)
    b = inputs.shape[0]
    per_sample = dict(zip(names, stacked, strict=True))
    weight = 1.0 / b if loss_reduction == "mean" else 1.0
    with torch.no_grad():
        for (_, p), g in zip(named, stacked, strict=True):
            contribution = g.sum(0) * weight
            p.grad = contribution if p.grad is None else p.grad + contribution
    return stats_from_per_sample(per_sample, b, inner_products, coordinates)
