"""The autograd plumbing of the hooks engine: what travels from a layer's forward to its backward.

`Tap` is an identity on a layer's output that takes the layer's parameters as inputs. The
layer itself runs with those parameters detached (see ``hooks.py``), so autograd reaches them
only through `Tap.backward`, which asks the engine for the summed gradients and hands them back;
autograd then accumulates them into ``p.grad`` and fires every gradient hook (DDP's included)
exactly as in a plain backward.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..rules import LayerRule

if TYPE_CHECKING:
    from ._pass import PassRecord

__all__ = ["Claim", "Site", "Tap", "whole_base"]


@dataclasses.dataclass(frozen=True)
class Claim:
    """A parameter a rule is responsible for."""

    local: str  # name inside its module ("weight")
    qualname: str  # name in the model ("layer1.0.conv1.weight")
    param: nn.Parameter


class Site:
    """One call of one module in one pass, carried by the autograd graph to its backward."""

    __slots__ = (
        "args",
        "batch_dim",
        "broadcast",
        "input_grad",
        "kwargs",
        "module",
        "names",
        "out_shape",
        "params",
        "pass_",
        "qualnames",
        "rule",
        "values",
    )

    def __init__(
        self,
        pass_: PassRecord,
        module: nn.Module,
        rule: LayerRule,
        claims: tuple[Claim, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        input_grad: bool,
        out_shape: torch.Size | None,
        values: dict[str, Tensor] | None = None,
        broadcast: int | None = None,
        batch_dim: int = 0,
    ) -> None:
        self.pass_ = pass_
        self.module = module
        self.rule = rule
        self.names = tuple(c.local for c in claims)
        self.params = tuple(c.param for c in claims)
        self.qualnames = tuple(c.qualname for c in claims)
        self.args = args  # kept only for the functorch fallback
        self.kwargs = kwargs
        self.input_grad = input_grad  # the rule returns the layer's input gradient
        self.out_shape = out_shape  # set when the tap holds the base of a reshaped output
        self.values = values  # parameter values copied at the forward (FSDP2), or None
        self.broadcast = broadcast  # b when a 1-row output is expanded to the batch
        self.batch_dim = batch_dim  # where the batch is in this call's input and output


class Tap(torch.autograd.Function):
    """Identity on the module output whose backward hands the parameter gradients to autograd."""

    @staticmethod
    def forward(ctx, tracker, site, dirty, output, inputs, *params):
        ctx.tracker = tracker
        ctx.site = site
        ctx.has_inputs = inputs is not None
        if ctx.has_inputs:
            # Saved through autograd so that an in-place change of the input after the forward
            # raises autograd's usual version error instead of corrupting the statistics.
            ctx.save_for_backward(inputs)
        if dirty:
            # An in-place identity keeps the module's output object, so in-place ops after it
            # (ReLU(inplace=True)) keep working. Safe for the registered layer types, whose
            # backward never saves their own output. Never a view: see `whole_base`.
            ctx.mark_dirty(output)
            return output
        if site.broadcast is not None:  # one row used by every sample (hooks.py, broadcast)
            return output.expand(site.broadcast, *output.shape[1:]).clone()
        return output.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        inputs = ctx.saved_tensors[0] if ctx.has_inputs else None
        grad_input, grads = ctx.tracker._on_backward(ctx.site, inputs, grad_output)
        if ctx.site.broadcast is not None:
            grad_output = grad_output.sum(0, keepdim=True)  # the one row the module produced
        return (None, None, None, grad_output, grad_input, *grads)


def whole_base(view: Tensor) -> Tensor | None:
    """The base of ``view`` if ``view`` is a contiguous reshape of all of it, else None.

    Linear on (b, T, d) and Embedding return such reshapes of a 2-D result. Marking the view
    dirty would make autograd rebuild the base in the backward (CopySlices: two extra copies of
    the gradient; the benchmark Transformer went from 1.44× to about 1.3× a plain step when
    this was fixed); tapping the base and reshaping after the tap costs nothing.
    """
    base = view._base
    if (
        base is not None
        and view.is_contiguous()
        and base.is_contiguous()
        and base.numel() == view.numel()
        and base.data_ptr() == view.data_ptr()
    ):
        return base
    return None
