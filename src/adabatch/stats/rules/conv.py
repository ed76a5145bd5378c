"""Per-sample gradients of ``nn.Conv1d/2d/3d`` at the cost of the plain weight gradient.

A convolution's weight gradient for one sample is itself a convolution of that sample's input
with its output gradient. Stacking the b samples along the channel axis and declaring
``groups = b · groups`` turns the whole batch into one grouped convolution whose weight
gradient (``aten.convolution_backward`` with only the weight output requested) is the b
per-sample gradients side by side. The backend's own weight-gradient kernel does the work —
measured on a 2-core CPU as fast as the plain (summed) weight gradient, where unfold + bmm was
2–10× slower — and the per-sample block then gives grad = Σᵢ Gᵢ, S2 = ‖G‖²_F, qᵢ = ⟨Gᵢ, grad⟩
in single passes. Because grad comes from the block, autograd never computes the weight
gradient a second time. Layers with very few inputs per position (the RGB input layer) use
unfold + one batched GEMM instead (see `SMALL_FAN_IN`). The Gram ("ghost") trick is never used
here: its b·L² memory and b·L²·(C_in k² + C_out) time lose on every spatial map size of the
models we target.

Any stride, padding (numbers, "same", "valid", non-zero padding modes), dilation and groups.
Bias: gᵢ = Σ over positions of δᵢ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LayerCall, MaterializingRule

__all__ = ["SMALL_FAN_IN", "ConvRule", "conv_per_sample_weight"]


def _padded_input(module: nn.modules.conv._ConvNd, a: Tensor) -> tuple[Tensor, list[int]]:
    """Input with any non-trivial padding applied, and the symmetric padding left to apply."""
    n = a.dim() - 2
    if module.padding_mode != "zeros":
        # The module pads explicitly with this mode, then convolves with padding 0.
        return F.pad(a, module._reversed_padding_repeated_twice, mode=module.padding_mode), [0] * n
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return a, [0] * n
        # "same" (stride 1): total padding d·(k−1), left half rounded down.
        pads: list[int] = []
        for k, dil in zip(reversed(module.kernel_size), reversed(module.dilation), strict=True):
            total = dil * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(a, pads), [0] * n
    return a, list(module.padding)


# With at most this many inputs per output position (C_in·k_h·k_w, e.g. 27 for the first layer
# of an RGB network), unfold + one batched GEMM beats the grouped kernel, whose groups are then
# too small to vectorise (3→32 channels at 32×32: see benchmarks/layer_routes.py, BENCHMARKS.md).
SMALL_FAN_IN = 32


def conv_per_sample_weight(module: nn.modules.conv._ConvNd, a: Tensor, d: Tensor) -> Tensor:
    """Per-sample weight gradients (m, C_out, C_in/groups, *k) of a convolution."""
    x, padding = _padded_input(module, a)
    m = x.shape[0]
    c_in, c_out = x.shape[1], d.shape[1]
    fan_in = c_in * module.weight.shape[2:].numel()
    if x.dim() == 4 and module.groups == 1 and fan_in <= SMALL_FAN_IN:
        # gᵢ = δᵢ Uᵢᵀ with Uᵢ the (C_in·k_h·k_w) × L unfolded input of sample i.
        u = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)
        g = torch.bmm(d.reshape(m, c_out, -1), u.transpose(1, 2))
        return g.view(m, c_out, c_in, *module.kernel_size)
    groups = module.groups * m
    x = x.reshape(1, m * c_in, *x.shape[2:])
    g = d.reshape(1, m * c_out, *d.shape[2:])
    w_shape = (m * c_out, c_in // module.groups, *module.kernel_size)
    # Only the shape of `weight` matters when only the weight gradient is requested; an
    # uninitialised buffer is never touched, so it costs no page faults.
    w_proxy = torch.empty(w_shape, dtype=x.dtype, device=x.device)
    n = x.dim() - 2
    _, gw, _ = torch.ops.aten.convolution_backward(
        g,
        x,
        w_proxy,
        None,
        list(module.stride),
        padding,
        list(module.dilation),
        False,
        [0] * n,
        groups,
        [False, True, False],
    )
    return gw.view(m, c_out, c_in // module.groups, *module.kernel_size)


class ConvRule(MaterializingRule):
    """Rule for ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:
        """Per-sample gradients of this call's trainable parameters for samples ``rows``."""
        assert call.grad_output is not None
        module = call.module
        assert isinstance(module, nn.modules.conv._ConvNd)
        a = call.inputs[rows]
        d = call.grad_output[rows]
        out = []
        for name in call.names:
            if name == "weight":
                out.append(conv_per_sample_weight(module, a, d))
            else:
                out.append(d.sum(dim=tuple(range(2, d.dim()))))
        return out
