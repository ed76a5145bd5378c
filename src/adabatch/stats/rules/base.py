"""What a per-layer rule receives and returns, and the shared "materialise, then reduce" path.

A rule turns one call of one module into (a) the summed gradient of each of the module's
trainable parameters — which the hooks engine hands to autograd, so that ``p.grad`` is filled
exactly as a plain backward would fill it — and (b) that call's contribution to the
statistics. All quantities are in *hook scale*: the layer sees δ = ∂L/∂output of the batch
loss L as the user reduced it, so with a mean loss every per-sample term is gᵢ/b. The engine
rescales once per batch (``stats/engines/hooks.py``).

Per-layer contributions (summed over layers by the engine):

* ``sq_norm``  Σᵢ ‖g̃ᵢ‖² over this layer's parameters (a 0-dim tensor),
* ``inner``    per parameter tensor l of the call (aligned with ``call.names``), the
  length-b vector qᵢ^(l) = ⟨g̃ᵢ^(l), Σⱼ g̃ⱼ^(l)⟩ against that parameter's own summed
  gradient. The global pᵢ = ⟨gᵢ, ḡ⟩ is the sum over every parameter of every layer,
  rescaled, *before* squaring; the per-tensor vectors also give the "layerwise" statistics
  Σᵢ (pᵢ^(l))² (see `adabatch.stats.summary`),
* ``coord_sq`` Σᵢ g̃ᵢ ⊙ g̃ᵢ per parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .._sums import sum_of

__all__ = [
    "LayerCall",
    "LayerResult",
    "LayerRule",
    "MaterializingRule",
    "Need",
    "OwnedForwardRule",
    "PerSample",
    "RuleBase",
    "param_value",
    "reduce_per_sample",
]


@dataclasses.dataclass(frozen=True)
class Need:
    """Which optional statistics to compute, and how much memory materialisation may take."""

    inner: bool = False
    coords: bool = False
    # Largest per-layer block of materialised per-sample gradients, in bytes; above it the
    # samples are processed in chunks (P2 then needs a second pass over the chunks).
    max_block_bytes: int = 256 * 2**20


@dataclasses.dataclass
class LayerCall:
    """One call of a module during a forward pass, completed by its backward.

    Attributes:
        module: the module that ran.
        inputs: its first positional input (the activation a, or token ids for Embedding).
        grad_output: δ = ∂L/∂output, same shape as the output (None until backward).
        names: local names of the trainable parameters used in this call (e.g. "weight").
        params: the parameters themselves, aligned with ``names``.
        args: all positional inputs (the functorch fallback needs them).
        kwargs: keyword inputs (the functorch fallback needs them).
        input_grad: the rule owns the input gradient of this call and must return it.
        values: the module's parameter values as its forward saw them, when they had to be
            copied (FSDP2 frees gathered parameters between the forward and this backward);
            None otherwise. Read them with `param_value`.
    """

    module: nn.Module
    inputs: Any
    grad_output: Tensor | None
    names: tuple[str, ...]
    params: tuple[Tensor, ...]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_grad: bool = False
    values: Mapping[str, Tensor] | None = None

    @property
    def batch_size(self) -> int:
        """Number of samples in the call (the leading dimension of ``grad_output``)."""
        assert self.grad_output is not None
        return self.grad_output.shape[0]


def param_value(call: LayerCall, name: str) -> Tensor:
    """The value of the module's parameter ``name`` in this call, detached.

    The call's own (trainable) parameters are those its forward used — under FSDP2 the
    gathered ones, while the module registers a shard between calls; a frozen parameter is
    read from the module, and gathered if it is a sharded DTensor.
    """
    if call.values is not None and name in call.values:
        return call.values[name]
    if name in call.names:
        return call.params[call.names.index(name)].detach()
    value = getattr(call.module, name)
    full_tensor = getattr(value, "full_tensor", None)
    return (full_tensor() if full_tensor is not None else value).detach()


@dataclasses.dataclass
class LayerResult:
    """A rule's answer for one call: summed grads (aligned with ``call.names``) and stats."""

    grads: list[Tensor]
    sq_norm: Tensor
    inner: list[Tensor] | None = None  # one length-b vector qᵢ^(l) per parameter
    coord_sq: list[Tensor] | None = None
    grad_input: Tensor | None = None  # only when the call asked for it (``call.input_grad``)


class LayerRule(Protocol):
    """A closed form for one module type. Instances are stateless."""

    def check(self, module: nn.Module) -> None:
        """Raise a clear error if this module instance cannot be handled (called at attach)."""

    def owns_input_grad(self, module: nn.Module) -> bool:
        """Whether this call's input gradient comes from the rule instead of autograd.

        A rule whose backend kernel yields the input gradient and the per-sample parameter
        gradients in one pass (GroupNorm) takes over both: the engine runs the module on a
        detached input and the rule returns ``grad_input``.
        """

    def compute(self, call: LayerCall, need: Need) -> LayerResult:
        """Summed gradients and statistics of this call, in hook scale."""

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:
        """Per-sample gradients for samples ``rows``, shape (m, *param.shape) each.

        Used for parameters shared between several calls, where norms must be taken of the
        summed contributions, and as the generic route of `MaterializingRule`.
        """


def reduce_per_sample(
    per_sample,
    batch_size: int,
    params: tuple[Tensor, ...],
    need: Need,
    grads: list[Tensor] | None = None,
) -> LayerResult:
    """Summed grads and statistics from materialised per-sample gradients.

    ``per_sample(rows)`` returns one (m, *shape) tensor per parameter. If all b rows fit in
    ``need.max_block_bytes`` they are materialised once and every statistic is one BLAS-1/2
    pass over that block: grad = Σᵢ Gᵢ, S2 = ‖G‖²_F, q = G·grad (one GEMV per parameter,
    kept per parameter), M = Σᵢ Gᵢ⊙Gᵢ. Otherwise the rows are processed in chunks; q needs
    the full grad first, so it takes a second pass.
    ``grads`` may be given when the caller already has the summed gradient.
    """
    numel = sum(p.numel() for p in params)
    itemsize = params[0].element_size() if params else 4
    step = max(1, need.max_block_bytes // max(1, numel * itemsize))
    chunks = [slice(s, min(s + step, batch_size)) for s in range(0, batch_size, step)]

    sums: list[Tensor] | None = None
    sq_terms: list[Tensor] = []
    coords: list[Tensor] | None = None
    kept: list[Tensor] | None = None  # the one block, when everything fits
    for rows in chunks:
        blocks = per_sample(rows)
        m = rows.stop - rows.start
        flat = [g.reshape(m, -1) for g in blocks]
        sq_terms.append(sum_of_dots(flat))
        if grads is None:
            # 1ᵀG as a GEMV reads the block once, faster than a reduction over dim 0.
            ones = flat[0].new_ones(m)
            part = [(ones @ f).view(g.shape[1:]) for f, g in zip(flat, blocks, strict=True)]
            sums = part if sums is None else [a + b for a, b in zip(sums, part, strict=True)]
        if need.coords:
            part = [(g * g).sum(0) for g in blocks]
            coords = part if coords is None else [a + b for a, b in zip(coords, part, strict=True)]
        if len(chunks) == 1:
            kept = flat
    if grads is None:
        assert sums is not None
        grads = sums
    inner = None
    if need.inner:
        # qᵢ = ⟨Gᵢ, grad⟩ per parameter needs the full grad: reuse the block, or revisit the
        # chunks.
        parts: list[list[Tensor]] = [[] for _ in grads]
        for rows in chunks:
            m = rows.stop - rows.start
            flat = kept if kept is not None else [g.reshape(m, -1) for g in per_sample(rows)]
            for k, (f, t) in enumerate(zip(flat, grads, strict=True)):
                parts[k].append(f @ t.reshape(-1))
        inner = [ps[0] if len(ps) == 1 else torch.cat(ps) for ps in parts]
    sq = sq_terms[0] if len(sq_terms) == 1 else torch.stack(sq_terms).sum()
    return LayerResult(grads, sq, inner, coords)


def sum_of_dots(flat: list[Tensor]) -> Tensor:
    """Σ over tensors of ‖t‖²_F, each as one BLAS dot product."""
    return sum_of(torch.dot(f.reshape(-1), f.reshape(-1)) for f in flat)


class RuleBase:
    """Defaults of the optional parts of `LayerRule`."""

    def check(self, module: nn.Module) -> None:  # noqa: D102 - see LayerRule
        return None

    def owns_input_grad(self, module: nn.Module) -> bool:  # noqa: D102
        return False


#: ``per_sample(rows)``: the per-sample blocks (hook scale) of samples ``rows``, by name.
PerSample = Callable[[slice], dict[str, Tensor]]


class OwnedForwardRule(RuleBase):
    """A rule that recomputes its layer's forward (attention, RNNs) instead of tapping it.

    The engine runs the module's own forward without gradients, then calls `owned_forward`,
    whose output (built from the live trainable parameters, so that autograd accumulates
    their gradients as for any use) replaces the module's; during the backward the rule hands
    ``on_blocks`` a `PerSample` function, and the engine reduces it like a tapped call's.
    """

    def batch_dim(self, module: nn.Module) -> int:
        """The dimension that holds the batch: 0 with ``batch_first``, else 1 (torch's layers)."""
        return 0 if getattr(module, "batch_first", False) else 1

    def batch_size_of(self, module: nn.Module, args: tuple, kwargs: dict) -> int:
        """The batch size of this call; raises a clear error for inputs the rule refuses."""
        raise NotImplementedError

    def owned_forward(
        self,
        module: nn.Module,
        args: tuple,
        kwargs: dict,
        weights: dict[str, Tensor],
        trainable: frozenset[str],
        on_blocks: Callable[[PerSample], None],
    ) -> Any:
        """The module's output, recomputed.

        ``weights`` holds every parameter by its name under the module (the ``trainable``
        ones live, the others detached); ``on_blocks`` is called once, in the backward.
        """
        raise NotImplementedError

    # The tap's side of `LayerRule`: never called for a rule that owns the forward.
    def compute(self, call: LayerCall, need: Need) -> LayerResult:  # noqa: D102
        raise TypeError(f"{type(self).__name__} owns the forward: see owned_forward")

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        raise TypeError(f"{type(self).__name__} owns the forward: see owned_forward")


class MaterializingRule(RuleBase):
    """Base for rules whose fast path *is* materialisation (conv, norm layers, sequences).

    Subclasses implement `per_sample`; `compute` reduces the block in one pass.
    """

    def per_sample(self, call: LayerCall, rows: slice) -> list[Tensor]:  # noqa: D102
        raise NotImplementedError

    def compute(self, call: LayerCall, need: Need) -> LayerResult:  # noqa: D102
        return reduce_per_sample(
            lambda rows: self.per_sample(call, rows), call.batch_size, call.params, need
        )
