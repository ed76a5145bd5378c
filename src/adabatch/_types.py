"""Type aliases shared across the package, each with the tuple of its values.

A `Literal` alias types the public API; its tuple (`typing.get_args` of the alias) is what the
argument checks list in their errors, so the two can never disagree.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "BATCHNORM_MODES",
    "INNER_MODES",
    "LOSS_REDUCTIONS",
    "RESIZE_AT",
    "BatchNormMode",
    "InnerMode",
    "LossReduction",
    "ResizeAt",
]

#: How a loss reduces over the batch: L = Σℓᵢ/b ("mean") or L = Σℓᵢ ("sum").
LossReduction = Literal["mean", "sum"]
LOSS_REDUCTIONS: tuple[str, ...] = get_args(LossReduction)

#: Per-sample statistics through a training-mode BatchNorm: refuse, or use layer-level terms.
BatchNormMode = Literal["error", "approximate"]
BATCHNORM_MODES: tuple[str, ...] = get_args(BatchNormMode)

#: Inner products against the mean gradient over all parameters, or per parameter tensor.
InnerMode = Literal["global", "layerwise"]
INNER_MODES: tuple[str, ...] = get_args(InnerMode)

#: When a requested batch size takes effect: at the next batch, or at the next epoch start.
ResizeAt = Literal["batch", "epoch"]
RESIZE_AT: tuple[str, ...] = get_args(ResizeAt)
