"""Per-sample gradients of normalisation layers' affine parameters.

All of them compute y = x̂ ⊙ γ + β with x̂ the normalised input, so per sample
g̃ᵢ^γ = Σ δᵢ ⊙ x̂ᵢ and g̃ᵢ^β = Σ δᵢ, summed over every axis that γ is broadcast along.
These blocks are b × C (or b × normalized_shape): small, so they are always materialised.

Channel-first layers (GroupNorm, InstanceNorm, BatchNorm) reuse the backend's fused
GroupNorm backward kernel: viewing the batch as one sample with b·C channels, its
"weight gradient" Σₛ δ·(a − μ)·rstd per channel *is* the per-sample, per-channel γ gradient,
computed in one read of (a, δ) — about 3× faster than materialising x̂ and multiplying
(``benchmarks/layer_routes.py``). For
GroupNorm and InstanceNorm (each sample and group normalised on its own) the same kernel call
also yields the exact input gradient, so the engine lets the rule replace the layer's whole
backward (see `LayerRule.owns_input_grad`). BatchNorm's input gradient couples the samples
and stays with autograd. The statistics (mean, rstd) are recomputed from the saved input.
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

from .base import (
    LayerCall,
    LayerResult,
    MaterializingRule,
    Need,
    param_value,
    reduce_per_sample,
)

__all__ = ["BatchNormRule", "GroupNormRule", "InstanceNormRule", "LayerNormRule", "RMSNormRule"]


def channel_norm_backward(
    a: Tensor,
    d: Tensor,
    mean: Tensor,
    rstd: Tensor,
    groups: int,
    weight: Tensor | None = None,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """(input gradient or None, per-sample γ gradient, per-sample β gradient) of a channel norm.

    ``a``, ``d``: (m, C, *spatial); ``mean``, ``rstd``: (m, groups) statistics used to
    normalise, with ``groups`` dividing C and each group normalised on its own. Computed by
    GroupNorm's backward kernel on the batch seen as a single sample with m·C channels and
    m·groups groups, so the kernel's "parameter gradient" is per sample and channel. With
    ``weight`` (γ of shape C) the same call also returns the input gradient, which is exact
    because every group is normalised independently in both views.
    """
    m, c = a.shape[:2]
    s = a[0, 0].numel()
    want_input = weight is not None
    # Without the input gradient the kernel's `weight` is unused: a stride-0 stand-in.
    w = weight.repeat(m) if weight is not None else a.new_ones(()).expand(m * c)
    grad_input, dgamma, dbeta = torch.ops.aten.native_group_norm_backward(
        d.reshape(1, m * c, s),
        a.reshape(1, m * c, s),
        mean.reshape(1, m * groups),
        rstd.reshape(1, m * groups),
        w,
        1,
        m * c,
        s,
        m * groups,
        [want_input, True, True],
    )
    return (grad_input.view(a.shape) if want_input else None), dgamma.view(m, c), dbeta.view(m, c)


def _select(names: tuple[str, ...], dgamma: Tensor, dbeta: Tensor) -> list[Tensor]:
    return [dgamma if name == "weight" else dbeta for name in names]


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


class _FusedChannelNormRule(MaterializingRule):
    """GroupNorm-like layers: one backward kernel gives the input and per-sample gradients.

    The engine runs the module on a detached input, so autograd does not run the layer's
    backward at all; `compute` returns its input gradient together with the per-sample
    blocks.
    """

    def groups(self, module: nn.Module) -> int:
        raise NotImplementedError

    def owns_input_grad(self, module: nn.Module) -> bool:
        return True

    def _stats(self, call: LayerCall) -> tuple[Tensor, Tensor]:
        """(mean, rstd) per sample and group, recomputed from the saved input.

        Computing them in the forward hook instead (input still in cache) measured no faster
        on ResNet-20, and this keeps the rule free of forward-time state.
        """
        return _per_sample_stats(call.inputs, self.groups(call.module), call.module.eps)  # type: ignore[arg-type]

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:
        assert call.grad_output is not None
        mean, rstd = self._stats(call)
        _, dgamma, dbeta = channel_norm_backward(
            call.inputs[rows],
            call.grad_output[rows],
            mean[rows],
            rstd[rows],
            self.groups(call.module),
        )
        return _select(call.names, dgamma, dbeta)

    def compute(self, call: LayerCall, need: Need) -> LayerResult:
        assert call.grad_output is not None
        mean, rstd = self._stats(call)
        weight = param_value(call, "weight") if call.input_grad else None
        grad_input, dgamma, dbeta = channel_norm_backward(
            call.inputs, call.grad_output, mean, rstd, self.groups(call.module), weight
        )
        blocks = _select(call.names, dgamma, dbeta)
        result = reduce_per_sample(
            lambda rows: [blk[rows] for blk in blocks], call.batch_size, call.params, need
        )
        result.grad_input = grad_input
        return result


class GroupNormRule(_FusedChannelNormRule):
    """Rule for ``nn.GroupNorm`` (fused: input and per-sample gradients in one kernel)."""

    def groups(self, module: nn.Module) -> int:  # noqa: D102
        assert isinstance(module, nn.GroupNorm)
        return module.num_groups


class InstanceNormRule(_FusedChannelNormRule):
    """Rule for ``nn.InstanceNorm1d/2d/3d`` with ``affine=True``.

    With the input's own statistics (training, or no running statistics) it is a GroupNorm
    with one channel per group, fused like GroupNorm. With running statistics (eval mode) it
    is a per-sample affine map; autograd then computes the input gradient.
    """

    def groups(self, module: nn.Module) -> int:  # noqa: D102
        return module.num_features  # type: ignore[return-value]

    def owns_input_grad(self, module: nn.Module) -> bool:  # noqa: D102
        return _uses_input_stats(module)

    def _stats(self, call: LayerCall) -> tuple[Tensor, Tensor]:
        module = call.module
        if _uses_input_stats(module):
            return super()._stats(call)
        m, c = call.inputs.shape[:2]
        assert isinstance(module, nn.modules.instancenorm._InstanceNorm)
        assert module.running_mean is not None and module.running_var is not None
        mean = module.running_mean.expand(m, c)
        rstd = torch.rsqrt(module.running_var + module.eps).expand(m, c)
        return mean, rstd


def _uses_input_stats(module: nn.Module) -> bool:
    return module.training or not module.track_running_stats  # type: ignore[return-value]


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
        _, dgamma, dbeta = channel_norm_backward(x, d, mean.expand(m, c), rstd.expand(m, c), c)
        return _select(call.names, dgamma, dbeta)
