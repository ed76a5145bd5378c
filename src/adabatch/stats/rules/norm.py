"""Per-sample gradients of normalisation layers' affine parameters.

All of them compute y = x̂ ⊙ γ + β with x̂ the normalised input, so per sample
g̃ᵢ^γ = Σ δᵢ ⊙ x̂ᵢ and g̃ᵢ^β = Σ δᵢ, summed over every axis that γ is broadcast along.
These blocks are b × C (or b × normalized_shape): small, so they are always materialised.

Channel-first layers (GroupNorm, InstanceNorm, BatchNorm) reuse the backend's fused
GroupNorm backward kernel: viewing the batch as one sample with b·C channels, its
"weight gradient" Σₛ δ·(a − μ)·rstd per channel *is* the per-sample, per-channel γ gradient,
computed in one read of (a, δ) — 2–7× faster than materialising x̂ and multiplying. The mean
and rstd come from the statistics the layer normalised with (per sample and group, or per
channel for BatchNorm), recomputed from the saved input.
LayerNorm and RMSNorm recompute x̂ and reduce over the sequence axes.

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


def channel_affine_per_sample(
    names: tuple[str, ...], a: Tensor, d: Tensor, mean: Tensor, rstd: Tensor, groups: int
) -> list[Tensor]:
    """Per-sample (γ, β) gradients of a channel-first norm, shape (m, C) each.

    ``a``, ``d``: (m, C, *spatial); ``mean``, ``rstd``: (m, groups) statistics used to
    normalise, with ``groups`` dividing C. Computed by GroupNorm's backward kernel on the
    batch seen as a single sample with m·C channels and m·groups groups.
    """
    m, c = a.shape[:2]
    s = a[0, 0].numel()
    # The kernel's `weight` only scales the input gradient, which is not requested.
    ones = a.new_ones(()).expand(m * c)
    _, dgamma, dbeta = torch.ops.aten.native_group_norm_backward(
        d.reshape(1, m * c, s),
        a.reshape(1, m * c, s),
        mean.reshape(1, m * groups),
        rstd.reshape(1, m * groups),
        ones,
        1,
        m * c,
        s,
        m * groups,
        [False, True, True],
    )
    return [(dgamma if name == "weight" else dbeta).view(m, c) for name in names]


def _trailing_affine_per_sample(
    names: tuple[str, ...], xhat: Tensor, d: Tensor, keep: int
) -> list[Tensor]:
    """Per-sample (γ, β) gradients of a norm over the trailing ``keep`` axes."""
    dims = tuple(range(1, d.dim() - keep))
    out = []
    for name in names:
        t = d * xhat if name == "weight" else d
        out.append(t.sum(dim=dims) if dims else t)
    return out


class LayerNormRule(MaterializingRule):
    """Rule for ``nn.LayerNorm``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.LayerNorm) and call.grad_output is not None
        a = call.inputs[rows]
        xhat = F.layer_norm(a, module.normalized_shape, None, None, module.eps)
        return _trailing_affine_per_sample(
            call.names, xhat, call.grad_output[rows], len(module.normalized_shape)
        )


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
        return _trailing_affine_per_sample(call.names, xhat, call.grad_output[rows], len(shape))


def _per_sample_stats(a: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """(mean, rstd) per sample and group, as GroupNorm computes them."""
    m, c = a.shape[:2]
    _, mean, rstd = torch.native_group_norm(a, None, None, m, c, a[0, 0].numel(), groups, eps)
    return mean, rstd


class GroupNormRule(MaterializingRule):
    """Rule for ``nn.GroupNorm``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.GroupNorm) and call.grad_output is not None
        a = call.inputs[rows]
        mean, rstd = _per_sample_stats(a, module.num_groups, module.eps)
        return channel_affine_per_sample(
            call.names, a, call.grad_output[rows], mean, rstd, module.num_groups
        )


class InstanceNormRule(MaterializingRule):
    """Rule for ``nn.InstanceNorm1d/2d/3d`` with ``affine=True``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        module = call.module
        assert isinstance(module, nn.modules.instancenorm._InstanceNorm)
        assert call.grad_output is not None
        a = call.inputs[rows]
        c = a.shape[1]
        if module.training or not module.track_running_stats:
            mean, rstd = _per_sample_stats(a, c, module.eps)
        else:
            assert module.running_mean is not None and module.running_var is not None
            m = a.shape[0]
            mean = module.running_mean.expand(m, c)
            rstd = torch.rsqrt(module.running_var + module.eps).expand(m, c)
        return channel_affine_per_sample(call.names, a, call.grad_output[rows], mean, rstd, c)


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
        if a.dim() == 2:  # BatchNorm1d on (b, C): one position per channel
            a = a.unsqueeze(-1)
        c = a.shape[1]
        if module.training or not module.track_running_stats:
            # The statistics of the whole batch the forward used (biased variance).
            var, mean = torch.var_mean(a.transpose(0, 1).reshape(c, -1), dim=1, unbiased=False)
        else:
            assert module.running_mean is not None and module.running_var is not None
            mean, var = module.running_mean, module.running_var
        rstd = torch.rsqrt(var + module.eps)
        x = a[rows]
        d = call.grad_output[rows].reshape(x.shape)
        m = x.shape[0]
        return channel_affine_per_sample(call.names, x, d, mean.expand(m, c), rstd.expand(m, c), c)
