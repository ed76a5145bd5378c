"""The reference engine: one backward per sample. Slow and obviously correct: the oracle.

Sample i's gradient is taken exactly as defined: the loss function applied to a batch holding
only sample i, ``loss_fn(outputs[i:i+1], targets[i:i+1])``, differentiated with
``torch.autograd.grad`` through the (retained) graph of one batched forward — so random layers
(dropout) use the same masks as the batch. Then ``loss_fn(outputs, targets).backward()`` fills
``p.grad`` as a plain step would, and the batch loss is checked against the declared reduction
of the per-sample losses.

With ``batchnorm="approximate"`` and a BatchNorm in training mode the per-sample gradient is
undefined; the engine then computes the same layer-level decomposition as the hooks engine:
for every module m with parameters θₘ and output yₘ, with δₘ = ∂L/∂yₘ of the batch loss,
g̃ᵢ(θₘ) = ∂⟨yₘ[i], δₘ[i]⟩/∂θₘ (δ held fixed), rescaled from the loss reduction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_batchnorm_mode, check_loss, check_reduction_matches, index_targets
from ..summary import GradStats
from ._dense import stats_from_per_sample

__all__ = ["reference_stats"]


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def reference_stats(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Any,
    *,
    loss_reduction: str = "mean",
    inner_products: bool = False,
    coordinates: bool = False,
    batchnorm: str = "error",
) -> GradStats:
    """Statistics from b explicit per-sample backward passes (see module docstring)."""
    approximate = check_batchnorm_mode(model, batchnorm)
    named = _trainable(model)
    b = inputs.shape[0]
    if approximate:
        per_sample = _layer_level_terms(model, loss_fn, inputs, targets, loss_reduction, named)
    else:
        per_sample = _per_sample_backward(model, loss_fn, inputs, targets, loss_reduction, named)
    return stats_from_per_sample(per_sample, b, inner_products, coordinates)


def _per_sample_backward(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Any,
    loss_reduction: str,
    named: list[tuple[str, nn.Parameter]],
) -> dict[str, Tensor]:
    params = [p for _, p in named]
    b = inputs.shape[0]
    outputs = model(inputs)
    rows: list[list[Tensor]] = []
    losses = []
    for i in range(b):
        loss_i = check_loss(loss_fn(outputs[i : i + 1], index_targets(targets, slice(i, i + 1))))
        losses.append(loss_i.detach())
        grads = torch.autograd.grad(loss_i, params, retain_graph=True, allow_unused=True)
        rows.append(
            [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
        )
    loss = check_loss(loss_fn(outputs, targets))
    check_reduction_matches(loss, torch.stack(losses), loss_reduction)
    loss.backward()
    return {name: torch.stack([row[k] for row in rows]) for k, (name, _) in enumerate(named)}


def _layer_level_terms(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Any,
    loss_reduction: str,
    named: list[tuple[str, nn.Parameter]],
) -> dict[str, Tensor]:
    names = {id(p): n for n, p in named}
    modules = [
        m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))
    ]
    outputs: dict[nn.Module, list[Tensor]] = {m: [] for m in modules}
    handles = [
        m.register_forward_hook(lambda mod, a, out: outputs[mod].append(out)) for m in modules
    ]
    try:
        out = model(inputs)
    finally:
        for h in handles:
            h.remove()
    for m, outs in outputs.items():
        if len(outs) != 1:
            raise ValueError(
                f"the layer-level reference needs every module with parameters to run once, "
                f"{type(m).__name__} ran {len(outs)} times"
            )
    loss = check_loss(loss_fn(out, targets))
    b = inputs.shape[0]
    scale = float(b) if loss_reduction == "mean" else 1.0
    ys = [outputs[m][0] for m in modules]
    deltas = torch.autograd.grad(loss, ys, retain_graph=True)
    per_sample: dict[str, list[Tensor]] = {n: [] for n, _ in named}
    for i in range(b):
        for m, y, delta in zip(modules, ys, deltas, strict=True):
            own = [p for p in m.parameters(recurse=False) if p.requires_grad]
            grads = torch.autograd.grad((y[i] * delta[i]).sum(), own, retain_graph=True)
            for p, g in zip(own, grads, strict=True):
                per_sample[names[id(p)]].append(g * scale)
    loss.backward()
    return {n: torch.stack(rows) for n, rows in per_sample.items()}
