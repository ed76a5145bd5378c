"""Per-sample gradients of normalisation layers' affine parameters.

All of them compute y = x̂ ⊙ γ + β with x̂ the normalised input, so per sample
g̃ᵢ^γ = Σ δᵢ ⊙ x̂ᵢ and g̃ᵢ^β = Σ δᵢ, summed over every axis that γ is broadcast along.
These blocks are b × C (or b × normalized_shape): tiny, so they are always materialised.
x̂ is recomputed from the saved input (one normalisation pass), because the fused forward
kernels do not expose it.

* LayerNorm, RMSNorm, GroupNorm, InstanceNorm normalise each sample on its own: exact.
* BatchNorm in eval mode (running statistics) is a per-sample affine map: exact.
* BatchNorm in training mode normalises with the batch's statistics, which couples the
  samples: a per-sample gradient is not defined. With ``batchnorm="approximate"`` the
  per-sample terms are taken at the layer level, as BackPACK computes them for the DiveBatch
  authors' code: every layer's term uses the true (coupled) δ of the batch backward, and
  BatchNorm's own terms use the batch's x̂. The terms sum exactly to the batch gradient;
  their norms are an approximation. The reference engine computes the same decomposition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerCall, MaterializingRule

__all__ = ["BatchNormRule", "GroupNormRule", "InstanceNormRule", "LayerNormRule", "RMSNormRule"]


def _affine_per_sample(call: LayerCall, xhat: Tensor, d: Tensor, keep: int) -> list[Tensor]:
    """Σ over the broadcast axes of δ⊙x̂ (γ) and δ (β); ``keep`` = axes to keep after batch.

    For channel-first layers (BatchNorm, GroupNorm, InstanceNorm) the kept axis is 1; for
    LayerNorm/RMSNorm the kept axes are the trailing ``normalized_shape``.
    """
    out = []
    for name in call.names:
        t = d * xhat if name == "weight" else d
        out.append(_reduce_to(t, keep, channel_first=call_is_channel_first(call.module)))
    return out


def call_is_channel_first(module: nn.Module) -> bool:
    """Whether γ is broadcast over a channel axis 1 (vs trailing normalized_shape)."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm))


def _reduce_to(t: Tensor, keep: int, channel_first: bool) -> Tensor:
    if channel_first:
        dims = tuple(range(2, t.dim()))
    else:
        dims = tuple(range(1, t.dim() - keep))
    return t.sum(dim=dims) if dims else t


class LayerNormRule(MaterializingRule):
    """Rule for ``nn.LayerNorm``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.LayerNorm) and call.grad_output is not None
        a = call.inputs[rows]
        xhat = F.layer_norm(a, module.normalized_shape, None, None, module.eps)
        return _affine_per_sample(call, xhat, call.grad_output[rows], len(module.normalized_shape))


class RMSNormRule(MaterializingRule):
    """Rule for ``nn.RMSNorm`` (torch ≥ 2.4): x̂ = x / sqrt(mean(x²) + eps), weight only."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert call.grad_output is not None
        a = call.inputs[rows]
        shape = tuple(module.normalized_shape)  # type: ignore[attr-defined]
        eps = module.eps  # type: ignore[attr-defined]
        if eps is None:
            eps = torch.finfo(a.dtype).eps
        dims = tuple(range(a.dim() - len(shape), a.dim()))
        xhat = a * torch.rsqrt(a.pow(2).mean(dim=dims, keepdim=True) + eps)
        return _affine_per_sample(call, xhat, call.grad_output[rows], len(shape))


class GroupNormRule(MaterializingRule):
    """Rule for ``nn.GroupNorm``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.GroupNorm) and call.grad_output is not None
        a = call.inputs[rows]
        xhat = F.group_norm(a, module.num_groups, None, None, module.eps)
        return _affine_per_sample(call, xhat, call.grad_output[rows], 1)


class InstanceNormRule(MaterializingRule):
    """Rule for ``nn.InstanceNorm1d/2d/3d`` with ``affine=True``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.modules.instancenorm._InstanceNorm)
        assert call.grad_output is not None
        a = call.inputs[rows]
        use_input_stats = module.training or not module.track_running_stats
        if use_input_stats:
            xhat = F.instance_norm(a, None, None, None, None, True, 0.0, module.eps)
        else:
            xhat = F.instance_norm(
                a, module.running_mean, module.running_var, None, None, False, 0.0, module.eps
            )
        return _affine_per_sample(call, xhat, call.grad_output[rows], 1)


class BatchNormRule(MaterializingRule):
    """Rule for ``nn.BatchNorm1d/2d/3d``: exact in eval mode, opt-in approximation in training.

    The engine refuses training-mode BatchNorm unless ``batchnorm="approximate"`` was chosen
    (see the module docstring), so reaching `per_sample` in training mode means the user
    opted in.
    """

    def check(self, module: nn.Module) -> None:  # noqa: D102
        if isinstance(module, nn.SyncBatchNorm):
            raise TypeError(
                "SyncBatchNorm normalises with statistics from every rank, so per-sample "
                "terms cannot be recomputed locally; convert it to BatchNorm2d for the "
                "statistics pass, or use GroupNorm"
            )

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        assert call.grad_output is not None
        a = call.inputs
        batch_stats = module.training or not module.track_running_stats
        reduce_dims = [0, *range(2, a.dim())]
        if batch_stats:
            # The statistics of the whole batch the forward used (biased variance).
            var, mean = torch.var_mean(a, dim=reduce_dims, unbiased=False, keepdim=True)
        else:
            assert module.running_mean is not None and module.running_var is not None
            view = [1, -1] + [1] * (a.dim() - 2)
            mean = module.running_mean.view(view)
            var = module.running_var.view(view)
        xhat = (a[rows] - mean) * torch.rsqrt(var + module.eps)
        return _affine_per_sample(call, xhat, call.grad_output[rows], 1)
