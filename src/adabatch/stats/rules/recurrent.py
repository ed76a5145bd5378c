"""Per-sample gradients of ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM``: the recurrence re-run per sample.

An RNN's weight gradient is a sum over time steps, Σₜ δₜ aₜᵀ, of the gate gradients δₜ and the
step's input aₜ (xₜ for the input weights, hₜ₋₁ for the hidden ones): the per-sample gradient
of sample i is Σₜ δᵢₜ aᵢₜᵀ. The δₜ live inside torch's fused RNN kernel, so the rule recomputes
the layer in plain tensor operations with every trainable weight *expanded* to one copy per
sample, ``W.expand(b, ...)`` (a view, no copy): autograd then delivers the gradient of the
expanded view — the (b, *W.shape) per-sample block — to a hook on it before summing it into
``W.grad`` as usual (so DDP and the user's hooks see an ordinary backward). The recomputed
output replaces the module's own, equal to rounding.

Conventions are torch's (``torch.nn.RNN`` documentation): gates ordered (i, f, g, o) for the
LSTM and (r, z, n) for the GRU, whose candidate uses r ⊙ (W_hn h + b_hn); ``h_n`` ordered
(layer, direction); the reverse direction's parameters end in ``_reverse``.

Refused, with a message: packed sequences, unbatched (2-D) inputs, LSTM projections
(``proj_size``) and inter-layer dropout in training mode (its masks would come from another
random stream than the module's own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .base import OwnedForwardRule, PerSample

__all__ = ["RECURRENT_TYPES", "RecurrentRule", "check_recurrent", "recurrent_forward"]

#: The module types this rule handles.
RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNN, nn.GRU, nn.LSTM)

Weights = Mapping[str, Tensor]  # parameter name → (out, in) or per-sample (b, out, in)


def check_recurrent(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Raise a clear error for what the per-sample recurrence does not handle."""
    name = type(module).__name__
    if not args or not isinstance(args[0], Tensor):
        raise TypeError(
            f"adabatch: {name} received a {type(args[0]).__name__ if args else 'no input'}; "
            "packed sequences are not supported by the per-sample statistics: pad the batch "
            "(and mask the loss) instead of packing it"
        )
    if args[0].dim() != 3:
        raise ValueError(
            f"adabatch: {name} received an unbatched input of shape {tuple(args[0].shape)}; "
            "the per-sample statistics need a batch (a 3-D input)"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(f"adabatch: LSTM with proj_size={module.proj_size} is not supported")
    if module.training and module.dropout > 0 and module.num_layers > 1:  # type: ignore[operator]
        raise ValueError(
            f"adabatch: {name}(dropout={module.dropout}) in training mode: the dropout between "
            "layers cannot be reproduced exactly; apply nn.Dropout between single-layer RNNs"
        )


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """The affine map x·Wᵀ + b, W shared (out, in) or per sample (B, out, in); x (B, ..., in)."""
    if w.dim() == 2:
        return torch.nn.functional.linear(x, w, b)
    squeeze = x.dim() == 2
    xs = x.unsqueeze(1) if squeeze else x
    y = torch.bmm(xs, w.transpose(1, 2))
    if b is not None:
        y = y + (b.unsqueeze(1) if b.dim() == 2 else b)
    return y.squeeze(1) if squeeze else y


def _cell(mode: str) -> Callable[..., tuple[Tensor, Tensor | None]]:
    if mode == "LSTM":
        return _lstm_step
    if mode == "GRU":
        return _gru_step
    return _rnn_step_tanh if mode == "RNN_TANH" else _rnn_step_relu


def _rnn_step_tanh(gi: Tensor, h: Tensor, c: None, w_hh: Tensor, b_hh: Tensor | None):
    return torch.tanh(gi + _linear(h, w_hh, b_hh)), None


def _rnn_step_relu(gi: Tensor, h: Tensor, c: None, w_hh: Tensor, b_hh: Tensor | None):
    return torch.relu(gi + _linear(h, w_hh, b_hh)), None


def _lstm_step(gi: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None):
    i, f, g, o = (gi + _linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(gi: Tensor, h: Tensor, c: None, w_hh: Tensor, b_hh: Tensor | None):
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = _linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h, None


def recurrent_forward(
    module: nn.Module, x: Tensor, hx: Any, weights: Weights
) -> tuple[Tensor, Any]:
    """The module's ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), in plain tensor ops.

    Args:
        module: an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``.
        x: its input, (b, T, d) if ``batch_first`` else (T, b, d).
        hx: the initial state as the module takes it (None: zeros).
        weights: every parameter by name, shared or expanded per sample.
    """
    rnn: Any = module
    lstm = rnn.mode == "LSTM"
    xb = x if rnn.batch_first else x.transpose(0, 1)  # (b, T, d) from here on
    b, steps = xb.shape[0], xb.shape[1]
    dirs = 2 if rnn.bidirectional else 1
    shape = (rnn.num_layers * dirs, b, rnn.hidden_size)
    if hx is None:
        h0 = xb.new_zeros(shape)
        c0 = xb.new_zeros(shape) if lstm else None
    elif lstm:
        h0, c0 = hx
    else:
        h0, c0 = hx, None
    step = _cell(rnn.mode)
    layer_in = xb
    h_last, c_last = [], []
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_hh = weights[f"weight_hh{sfx}"]
            b_hh = weights.get(f"bias_hh{sfx}")
            # The input side for every step at once: one (batched) GEMM.
            gi_all = _linear(layer_in, weights[f"weight_ih{sfx}"], weights.get(f"bias_ih{sfx}"))
            k = layer * dirs + d
            h, c = h0[k], (c0[k] if c0 is not None else None)
            seq = []
            order = range(steps - 1, -1, -1) if d else range(steps)
            for t in order:
                h, c = step(gi_all[:, t], h, c, w_hh, b_hh)
                seq.append(h)
            if d:
                seq.reverse()
            outs.append(torch.stack(seq, dim=1))
            h_last.append(h)
            if lstm:
                c_last.append(c)
        layer_in = outs[0] if dirs == 1 else torch.cat(outs, dim=-1)
    output = layer_in if rnn.batch_first else layer_in.transpose(0, 1)
    h_n = torch.stack(h_last)
    return output, ((h_n, torch.stack(c_last)) if lstm else h_n)


class RecurrentRule(OwnedForwardRule):
    """The hooks engine's rule for RNN/GRU/LSTM: it owns the forward (see the module docstring)."""

    def check(self, module: nn.Module) -> None:  # noqa: D102
        if getattr(module, "proj_size", 0):
            raise ValueError(
                f"adabatch: LSTM with proj_size={module.proj_size} has no per-sample rule; "  # type: ignore[attr-defined]
                "use proj_size=0 and a separate nn.Linear"
            )

    def batch_size_of(self, module: nn.Module, args: tuple, kwargs: dict) -> int:  # noqa: D102
        check_recurrent(module, args)
        return args[0].shape[self.batch_dim(module)]

    def owned_forward(
        self,
        module: nn.Module,
        args: tuple,
        kwargs: dict,
        weights: dict[str, Tensor],
        trainable: frozenset[str],
        on_blocks: Callable[[PerSample], None],
    ) -> Any:
        """`recurrent_forward` with every trainable weight expanded to one copy per sample.

        Autograd hands the hook on ``p.expand(b, *p.shape)`` the per-sample block before it
        sums it into ``p.grad``; once every block has arrived, ``on_blocks`` gets them.
        """
        x = args[0]
        b = x.shape[self.batch_dim(module)]
        blocks: dict[str, Tensor] = {}
        per_rows = lambda rows: {n: blk[rows] for n, blk in blocks.items()}  # noqa: E731

        def collect(name: str) -> Callable[[Tensor], None]:
            def hook(grad: Tensor) -> None:
                blocks[name] = grad
                if len(blocks) == len(trainable):
                    on_blocks(per_rows)

            return hook

        weights = dict(weights)
        for name in trainable:
            expanded = weights[name].expand(b, *weights[name].shape)
            expanded.register_hook(collect(name))
            weights[name] = expanded
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        return recurrent_forward(module, x, hx, weights)
