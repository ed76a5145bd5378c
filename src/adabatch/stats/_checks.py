"""Input validation shared by `compute_stats` and the engines: errors say what and how to fix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._types import BATCHNORM_MODES
from .._validate import check_choice

__all__ = [
    "batch_size_of",
    "batchnorms_in_training",
    "check_batchnorm_mode",
    "check_loss",
    "index_targets",
]


def batch_size_of(inputs: Any, targets: Any) -> int:
    """B = len(inputs), checked against the targets; raises for an empty or mismatched batch."""
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"inputs must be a tensor with the batch first, got {type(inputs).__name__}"
        )
    if inputs.dim() == 0:
        raise ValueError("inputs must have a batch dimension first, got a 0-dim tensor")
    b = inputs.shape[0]
    if b == 0:
        raise ValueError(
            "the batch is empty (inputs.shape[0] == 0): per-sample statistics need at least "
            "one sample; skip empty batches (e.g. a rank's empty shard) before computing them"
        )
    if isinstance(targets, Tensor) and (targets.dim() == 0 or targets.shape[0] != b):
        got = "a 0-dim tensor" if targets.dim() == 0 else f"{targets.shape[0]} targets"
        raise ValueError(
            f"inputs and targets disagree on the batch size: {b} inputs but {got}; pass "
            f"targets with the batch as their first dimension"
        )
    return b


def index_targets(targets: Any, rows: slice) -> Any:
    """The targets of samples ``rows`` (None stays None)."""
    return targets[rows] if isinstance(targets, Tensor) else targets


def check_loss(loss: Any, *, require_grad: bool = True) -> Tensor:
    """Raise unless ``loss`` is a scalar tensor (that requires grad, if ``require_grad``)."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss_fn must return a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"loss_fn must return the batch loss reduced to a scalar, got shape "
            f"{tuple(loss.shape)}; reduce it over the batch (reduction='mean' or 'sum') and "
            f"declare that reduction with loss_reduction=..."
        )
    if require_grad and not loss.requires_grad:
        raise ValueError(
            "the loss does not require grad: no parameter of the model is trainable, or the "
            "forward ran under torch.no_grad()"
        )
    return loss.reshape(())


def batchnorms_in_training(model: nn.Module) -> list[str]:
    """Names of BatchNorm layers with trainable parameters that normalise with batch stats."""
    return [
        name or type(model).__name__
        for name, m in model.named_modules()
        if is_batch_coupled(m) and any(p.requires_grad for p in m.parameters(recurse=False))
    ]


def is_batch_coupled(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm that normalises with the current batch's statistics."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        module.training or not module.track_running_stats
    )


def batchnorm_error(names: list[str]) -> ValueError:
    """The error for BatchNorm in training mode, naming the fixes."""
    return ValueError(
        f"BatchNorm in training mode ({', '.join(names[:3])}) normalises with the batch's "
        f"statistics, so per-sample gradients are undefined. Replace it with GroupNorm "
        f"(exact), put it in eval mode, or pass batchnorm='approximate' for the layer-level "
        f"approximation the DiveBatch authors use (see adabatch.stats.rules.norm)"
    )


def check_batchnorm_mode(model: nn.Module, batchnorm: str) -> bool:
    """Validate ``batchnorm``; raise for training-mode BatchNorm under "error".

    Returns whether the layer-level approximation is in effect (approximate mode and at least
    one batch-coupled BatchNorm).
    """
    check_choice("batchnorm", batchnorm, BATCHNORM_MODES)
    found = batchnorms_in_training(model)
    if found and batchnorm == "error":
        raise batchnorm_error(found)
    return bool(found)


def check_reduction_matches(loss: Tensor, per_sample_losses: Tensor, loss_reduction: str) -> None:
    """Raise if the batch loss is not the mean/sum of the per-sample losses it should be."""
    expected = per_sample_losses.mean() if loss_reduction == "mean" else per_sample_losses.sum()
    tol = 1e-4 if loss.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9
    if not torch.allclose(loss.detach(), expected.detach(), rtol=tol, atol=tol * 1e-3):
        mean, total = float(per_sample_losses.mean()), float(per_sample_losses.sum())
        batch = float(loss.detach())
        raise ValueError(
            f"loss_reduction={loss_reduction!r} but the batch loss {batch:.6g} is not the "
            f"{loss_reduction} of the per-sample losses (mean {mean:.6g}, sum {total:.6g}); "
            f"declare the reduction your loss_fn uses"
        )
