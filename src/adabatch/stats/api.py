"""`compute_stats`: the stable entry point for one batch's per-sample gradient statistics."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .._validate import check_reduction
from ._checks import batch_size_of
from .engines import ENGINES
from .summary import GradStats

__all__ = ["compute_stats"]


def compute_stats(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Any,
    *,
    engine: str = "hooks",
    loss_reduction: str = "mean",
    inner_products: bool = False,
    coordinates: bool = False,
    batchnorm: str = "error",
) -> GradStats:
    """Run forward and backward on one batch and return its per-sample gradient statistics.

    Afterwards every ``p.grad`` is exactly what ``loss_fn(model(inputs), targets).backward()``
    leaves (accumulated onto any existing ``p.grad``), so an optimizer step can follow.

    Args:
        model: any ``nn.Module`` taking ``inputs`` with the batch as the first dimension.
        loss_fn: ``loss_fn(outputs, targets)`` → the batch loss, a scalar reduced over the
            batch by ``loss_reduction``.
        inputs: the batch, b samples along dimension 0 (b ≥ 1).
        targets: the targets, b along dimension 0 (or None / anything ``loss_fn`` accepts).
        engine: a name in `ENGINES`: "hooks" (fast, default), "functorch", "reference".
        loss_reduction: "mean" (L = Σℓᵢ/b) or "sum" (L = Σℓᵢ).
        inner_products: also compute P2 = Σᵢ⟨gᵢ, ḡ⟩².
        coordinates: also compute Σᵢ gᵢ⊙gᵢ per parameter.
        batchnorm: "error" (default) refuses BatchNorm in training mode; "approximate" uses
            layer-level terms (hooks and reference engines).

    Returns:
        The batch's `GradStats`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from adabatch.stats import compute_stats, gradient_variance
        >>> model = nn.Linear(3, 2)
        >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> stats = compute_stats(model, nn.CrossEntropyLoss(), x, y)
        >>> stats.num_samples
        8
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    check_reduction(loss_reduction)
    batch_size_of(inputs, targets)
    return ENGINES[engine](
        model,
        loss_fn,
        inputs,
        targets,
        loss_reduction=loss_reduction,
        inner_products=inner_products,
        coordinates=coordinates,
        batchnorm=batchnorm,
    )
