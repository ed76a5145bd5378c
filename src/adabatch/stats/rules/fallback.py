"""The functorch fallback: exact per-sample gradients of a module that has no closed form.

For a module with trainable parameters of its own and no rule (a custom layer, a learned
scale, ``nn.MultiheadAttention``), the per-sample gradient of its parameters θ given the
output gradient δᵢ is a vector-Jacobian product of the module's forward on sample i alone:
g̃ᵢ = (∂ fᵢ/∂θ)ᵀ δᵢ. ``torch.func.vmap`` over ``torch.func.vjp`` computes all b of them by
re-running the module's forward once, batched. This costs roughly one extra forward and
backward of that module, which is why the engine warns when it falls back.

Requirements, each checked with a clear error: the module's positional tensor inputs and its
output have the batch first; its forward is a pure function of (parameters, inputs) — no
randomness (dropout inside the module) and no in-place buffer updates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, vjp, vmap

from .base import LayerCall, MaterializingRule, param_value

__all__ = ["FunctorchFallbackRule"]


class FunctorchFallbackRule(MaterializingRule):
    """Per-sample gradients of a module's direct parameters through ``torch.func``."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        assert call.grad_output is not None
        b = call.batch_size
        module = call.module
        names = call.names
        values = tuple(param_value(call, n) for n in names)

        def batched(x: Any) -> bool:
            return isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == b

        arg_dims = tuple(0 if batched(x) else None for x in call.args)
        args = tuple(x[rows] if batched(x) else x for x in call.args)
        kw_names = tuple(call.kwargs)
        kw_dims = tuple(0 if batched(call.kwargs[k]) else None for k in kw_names)
        kwargs = tuple(
            call.kwargs[k][rows] if batched(call.kwargs[k]) else call.kwargs[k] for k in kw_names
        )

        def forward_one(
            param_values: tuple[Tensor, ...], sample_args: tuple, sample_kwargs: tuple
        ) -> Tensor:
            full_args = tuple(
                x.unsqueeze(0) if dim == 0 else x
                for x, dim in zip(sample_args, arg_dims, strict=True)
            )
            full_kwargs = {
                k: (x.unsqueeze(0) if dim == 0 else x)
                for k, x, dim in zip(kw_names, sample_kwargs, kw_dims, strict=True)
            }
            out = functional_call(
                module, dict(zip(names, param_values, strict=True)), full_args, full_kwargs
            )
            if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
                out = out[0]  # the engine tracks the first output only (see hooks.py)
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"the functorch fallback needs {type(module).__name__} to return one tensor, "
                    f"got {type(out).__name__}; add a rule for it or use engine='functorch'"
                )
            return out

        def one(sample_args: tuple, sample_kwargs: tuple, delta: Tensor) -> tuple[Tensor, ...]:
            out, pullback = vjp(lambda pv: forward_one(pv, sample_args, sample_kwargs), values)
            return pullback(delta.unsqueeze(0).reshape(out.shape))[0]

        try:
            with torch.enable_grad():
                grads = vmap(one, in_dims=(arg_dims, kw_dims, 0), randomness="error")(
                    args, kwargs, call.grad_output[rows]
                )
        except RuntimeError as err:
            raise RuntimeError(
                f"the functorch fallback could not differentiate {type(module).__name__} per "
                f"sample ({err}). Its forward must be a pure, deterministic function of its "
                f"parameters and batch-first inputs; write a rule for it (adabatch.stats.rules) "
                f"or use engine='functorch' on the whole model"
            ) from err
        return list(grads)
