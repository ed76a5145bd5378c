"""The hooks engine: exact per-sample statistics inside the ordinary backward pass.

`GradStatsTracker` attaches to a model once; the user keeps writing ``loss.backward()`` and
reads the statistics of every batch since the last read with `GradStatsTracker.pop`::

    tracker = GradStatsTracker(model, loss_reduction="mean", inner_products=True)
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        stats = tracker.pop()          # GradStats of this batch
        optimizer.step()

How it works (and why it costs almost nothing). For every module with a rule (see
``stats/rules``), a forward pre-hook switches ``requires_grad`` off on the module's own
trainable parameters for the duration of its forward, and a forward hook switches it back on
and routes the output through `Tap` (``_tap.py``), an identity autograd function that takes those
parameters as inputs. Autograd therefore does *not* compute the weight gradient of that
module; instead `Tap.backward` receives δ = ∂L/∂output, asks the rule for the summed weight
gradient *and* the per-sample statistics from the same (input, δ) pair — for convolutions the
per-sample block is computed by the backend's weight-gradient kernel and its sum *is* the
weight gradient — and returns the summed gradient to autograd, which accumulates it into
``p.grad`` (and fires DDP's and the user's hooks) exactly as for a plain backward.

NOTE [requires_grad toggle]: the toggle is scoped to the module's own forward call and restored
in a forward hook registered with ``always_call=True``, so an exception inside the module
cannot leave a parameter frozen. Nothing else about the model, optimizer or autograd is
patched.

NOTE [scales]: hooks see δ of the loss as reduced by the user. With ``loss_reduction="mean"``
every per-sample term is gᵢ/b, so with s = b (mean) or s = 1 (sum):
Σgᵢ = s·Σg̃ᵢ, S2 = s²·Σ‖g̃ᵢ‖², M = s²·Σg̃ᵢ⊙g̃ᵢ and pᵢ = ⟨gᵢ, ḡ⟩ = (s²/b)·⟨g̃ᵢ, Σⱼg̃ⱼ⟩.

NOTE [passes]: each forward through the root module opens a *pass* (one micro-batch); its
statistics are finalised when read, so P2 is taken against each pass's own mean (see
`GradStats`). A parameter used by several calls in one pass (tied weights) has its per-sample
gradients materialised per call and summed before any norm is taken.

NOTE [fused layers]: a rule may also own its layer's *input* gradient (GroupNorm, whose backend
kernel yields the input gradient and the per-sample parameter gradients in one pass). The
module then runs on a detached input and autograd never runs the layer's own backward.

Limits: every layer must keep the batch as its first dimension (checked); double backward
(``create_graph=True``) through a tracked model and activation checkpointing inside it are not
supported.

Safety: a trainable parameter that receives a gradient through no rule — for example a child
module's weight used functionally by its parent — raises an error naming the parameter during
``backward()``, never a silently wrong statistic.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

from ..._fsdp import is_fsdp
from ..._types import BatchNormMode, LossReduction
from ..._validate import check_choice, check_reduction
from .._checks import batchnorm_error, check_batchnorm_mode, check_loss, is_batch_coupled
from .._sums import sum_of
from ..rules import (
    FALLBACK_RULE,
    LayerCall,
    LayerResult,
    LayerRule,
    Need,
    OwnedForwardRule,
    find_rule,
    reduce_per_sample,
)
from ..rules.recurrent import RECURRENT_TYPES
from ..summary import GradStats
from ._layout_probe import probe_layout
from ._pass import PassRecord
from ._tap import Claim, Site, Tap, whole_base

__all__ = ["FALLBACKS", "FallbackMode", "GradStatsTracker", "hooks_stats"]

#: What the tracker does with a module that has parameters and no rule.
FallbackMode = Literal["functorch", "error"]
FALLBACKS: tuple[str, ...] = get_args(FallbackMode)


#: torch's modules whose ``batch_first=False`` puts the batch in dimension 1 of every layer
#: they call (NOTE [layout]).
SEQ_FIRST_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.Transformer,
)


def _seq_first(module: nn.Module) -> bool:
    """Whether ``module`` is one of `SEQ_FIRST_TYPES` built with ``batch_first=False``."""
    if not isinstance(module, SEQ_FIRST_TYPES):
        return False
    attention = getattr(module, "self_attn", module)  # the Transformer layers keep it there
    return getattr(attention, "batch_first", getattr(module, "batch_first", True)) is False


class _InFlight(NamedTuple):
    """A running call of a tapped module, from its pre-hook to its post-hook."""

    claims: tuple[Claim, ...]
    original: Any  # the input when the module runs on a detached copy (all its arguments
    # when the rule owns the forward), else None
    values: dict[str, Tensor] | None  # parameter values kept for the backward (FSDP2)
    swapped: bool  # the claims hold FSDP2's gathered parameters
    batch_dim: int  # where this call holds the batch (NOTE [layout])


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    for x in (*args, *kwargs.values()):
        if isinstance(x, Tensor):
            return x
    return None


class GradStatsTracker:
    """Per-sample gradient statistics of every backward through ``model``, read with `pop`.

    Args:
        model: the model; hooks go on every submodule with trainable parameters of its own.
        loss_reduction: how the loss reduces over the batch: "mean" (L = Σℓᵢ/b) or "sum".
        inner_products: also compute P2 = Σᵢ⟨gᵢ, ḡ⟩² (global, across all layers).
        coordinates: also compute Σᵢ gᵢ⊙gᵢ per parameter.
        batchnorm: "error" (default) refuses BatchNorm in training mode; "approximate" takes
            layer-level terms (see ``stats/rules/norm.py``).
        fallback: what to do with a module that has trainable parameters and no rule:
            "functorch" (exact, slower, warns once) or "error".
        max_block_bytes: memory budget for one layer's materialised per-sample block; larger
            layers are processed in chunks of samples.
        check_coverage: raise if a parameter receives a gradient that no rule saw (costs one
            Python hook per parameter per backward).
        check_layout: on the first pass, run the model twice more without gradients to check
            that every tracked layer holds the batch where its rule reads it (see
            ``_layout_probe.py``); skipped with ``batchnorm="approximate"`` and under FSDP2.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss_reduction: LossReduction = "mean",
        inner_products: bool = False,
        coordinates: bool = False,
        batchnorm: BatchNormMode = "error",
        fallback: FallbackMode = "functorch",
        max_block_bytes: int = 256 * 2**20,
        check_coverage: bool = True,
        check_layout: bool = True,
    ) -> None:
        check_reduction(loss_reduction)
        check_choice("fallback", fallback, FALLBACKS)
        check_batchnorm_mode(model, batchnorm)
        if max_block_bytes < 1:
            raise ValueError(f"max_block_bytes must be >= 1, got {max_block_bytes}")
        self.model = model
        self.loss_reduction = loss_reduction
        self.batchnorm = batchnorm
        self.need = Need(inner=inner_products, coords=coordinates, max_block_bytes=max_block_bytes)
        self._handles: list[Any] = []
        self._claims: dict[nn.Module, tuple[Claim, ...]] = {}
        self._rules: dict[nn.Module, LayerRule] = {}
        # Per module, the calls whose forward is running (nested calls stack).
        self._in_flight: dict[nn.Module, list[_InFlight]] = {}
        # Per module, where each claim's parameter is registered: FSDP2 swaps it (see
        # `_live_claims`), and MHA's out_proj parameters live in a submodule.
        self._owners: dict[nn.Module, tuple[tuple[nn.Module, str], ...]] = {}
        self._passes: list[PassRecord] = []
        self._suspended = False
        self._loss_weight = 1.0
        self._tapped: set[int] = set()  # params whose gradient came through a tap
        self._verified: set[nn.Module] = set()  # external-library layers checked once
        self._batch_dims: list[int] = []  # the batch's dimension in the modules running now
        self._layout_pending = check_layout and batchnorm != "approximate"
        # NOTE [layout]: a root of torch's own seq-first types holds the batch in dimension 1.
        seq_first = _seq_first(model) or (
            isinstance(model, RECURRENT_TYPES) and not model.batch_first
        )
        self._root_batch_dim = 1 if seq_first else 0
        self._named_params = list(model.named_parameters())
        self._names = {id(p): n for n, p in self._named_params}
        self._attach(fallback, check_coverage)

    # ------------------------------------------------------------------ attach / detach
    def _attach(self, fallback: str, check_coverage: bool) -> None:
        # NOTE [layout]: torch's attention and Transformer layers built with batch_first=False
        # hold the batch in dimension 1 for every layer they call (they never permute it to
        # the front). Only these types are trusted: another module with such an attribute may
        # permute inside. Registered before the taps, so that a tapped module's own call sees
        # its layout too. (RNNs read their own batch_first.)
        for module in self.model.modules():
            if _seq_first(module):
                self._handles.append(module.register_forward_pre_hook(self._enter_seq_first))
                self._handles.append(
                    module.register_forward_hook(self._leave_seq_first, always_call=True)
                )
        covered: set[nn.Module] = set()
        fallbacks: list[str] = []
        for mod_name, module in self.model.named_modules():
            if module in covered:
                continue
            direct = list(module.named_parameters(recurse=False))
            rule = find_rule(module)
            if rule is None and not direct:
                continue
            if rule is None:
                if fallback == "error":
                    raise TypeError(
                        f"module {mod_name or '<root>'} ({type(module).__name__}) has trainable "
                        f"parameters and no per-sample rule; use fallback='functorch' (exact, "
                        f"slower), engine='functorch', or register a rule in "
                        f"adabatch.stats.rules.LAYER_RULES"
                    )
                rule = FALLBACK_RULE
                fallbacks.append(f"{mod_name or '<root>'} ({type(module).__name__})")
            else:
                rule.check(module)
            if isinstance(module, nn.MultiheadAttention):
                # MHA uses its out_proj's parameters functionally: claim the subtree.
                direct = list(module.named_parameters())
                covered.update(module.modules())
            if not direct:
                continue
            claims = tuple(Claim(n, self._names[id(p)], p) for n, p in direct)
            self._claims[module] = claims
            self._owners[module] = tuple(
                (module.get_submodule(path), name)
                for path, _, name in (c.local.rpartition(".") for c in claims)
            )
            self._rules[module] = rule
            self._in_flight[module] = []
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(
                module.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True)
            )
        self._handles.append(
            # First of the root's pre-hooks: a pass opens (and the layout probe runs) before a
            # tapped root's own hook freezes its parameters.
            self.model.register_forward_pre_hook(
                self._root_pre_hook, with_kwargs=True, prepend=True
            )
        )
        if fallbacks:
            warnings.warn(
                "adabatch: no closed-form rule for "
                + ", ".join(fallbacks[:5])
                + "; their per-sample gradients use the slower torch.func fallback",
                stacklevel=3,
            )
        if check_coverage:
            for p in self.model.parameters():
                if p.requires_grad:
                    self._handles.append(p.register_hook(self._make_coverage_hook(p)))

    def _enter_seq_first(self, module: nn.Module, args: tuple) -> None:
        self._batch_dims.append(1)

    def _leave_seq_first(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._batch_dims:
            self._batch_dims.pop()

    def remove(self) -> None:
        """Detach every hook; the model is left exactly as it was."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for stack in self._in_flight.values():
            for call in stack:
                for c in call.claims:
                    c.param.requires_grad_(True)
            stack.clear()

    def __enter__(self) -> GradStatsTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run forwards/backwards inside the block without statistics (e.g. evaluation)."""
        previous = self._suspended
        self._suspended = True
        try:
            yield
        finally:
            self._suspended = previous

    @contextlib.contextmanager
    def loss_weight(self, weight: float) -> Iterator[None]:
        """Declare that the loss of forwards inside the block is multiplied by ``weight``.

        Gradient accumulation over micro-batches weighs each chunk's mean loss by its share
        nₖ/N of the logical batch, so that ``p.grad`` is the logical batch's mean gradient;
        the hooks then see gᵢ·w/nₖ instead of gᵢ/nₖ, and the tracker divides w out again.
        The weight is bound when the forward starts (when the pass opens); nested blocks
        multiply their weights::

            for chunk in split_batch((inputs, targets), 128):
                with tracker.loss_weight(chunk.weight):
                    x, y = chunk.batch
                    loss = loss_fn(model(x), y) * chunk.weight
                loss.backward()

        A weight of 0 is accepted for an empty batch only (under DDP, a rank whose share of a
        short batch is empty still runs its backward, weighted by 0, so that the gradient
        all-reduce has every rank).
        """
        weight = float(weight)
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"loss weight must be a finite number >= 0, got {weight}")
        previous = self._loss_weight
        self._loss_weight = previous * weight  # nested blocks multiply (a DDP weight × a chunk's)
        try:
            yield
        finally:
            self._loss_weight = previous

    def new_pass(self) -> None:
        """Start a new pass (micro-batch) for the forwards that follow.

        A forward through the tracked model's own ``forward`` starts one by itself. Call this
        when the loop runs the model's *submodules* instead — a ``LightningModule`` whose
        ``training_step`` calls ``self.net(x)`` — and several micro-batches run between two
        `pop` calls, so that each gets its own pass (its own batch size and loss weight,
        bound now). A pass that sees no backward is dropped by `pop`.
        """
        if not self._suspended:
            self._new_pass(None)

    # ------------------------------------------------------------------ forward side
    def _root_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._suspended or not torch.is_grad_enabled():
            return
        first = _first_tensor(args, kwargs)
        dim = self._root_batch_dim
        if self._layout_pending:
            self._layout_pending = False
            self._check_layout(module, args, kwargs, dim)
        self._new_pass(first.shape[dim] if first is not None and first.dim() > dim else None)

    def _check_layout(self, model: nn.Module, args: tuple, kwargs: dict, dim: int) -> None:
        """NOTE [layout probe]: refuse a layer whose batch is not where its rule reads it."""
        if any(is_fsdp(m) or is_batch_coupled(m) for m in model.modules()):
            # FSDP2 cannot run a nested forward inside its root's pre-forward hook; a layer
            # that mixes samples (BatchNorm in training) gets its own, clearer error.
            return

        def batch_dim_of(module: nn.Module, inputs: tuple) -> int:
            rule = self._rules.get(module)
            if isinstance(rule, OwnedForwardRule):
                rule.batch_size_of(module, inputs, {})  # its refusals, with their messages
                return rule.batch_dim(module)
            return self._batch_dims[-1] if self._batch_dims else 0

        with self.paused():
            problems = probe_layout(model, list(self._claims), batch_dim_of, args, kwargs, dim)
        if problems:
            raise ValueError(
                "adabatch: these layers do not keep the batch where the hooks engine reads it: "
                + "; ".join(problems[:3])
                + ". Keep the batch first in every layer (torch's batch_first=False attention, "
                "Transformer and RNN layers are understood), or use engine='reference'; "
                "check_layout=False skips this check"
            )

    def _new_pass(self, batch_size: int | None) -> PassRecord:
        pass_ = PassRecord(
            batch_size, mean_loss=self.loss_reduction == "mean", loss_weight=self._loss_weight
        )
        self._passes.append(pass_)
        return pass_

    def _pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._suspended or not torch.is_grad_enabled():
            return None
        live, swapped = self._live_claims(module)
        claims = tuple(c for c in live if c.param.requires_grad)
        if not claims:
            return None
        rule = self._rules[module]
        # The refusals first, before anything is frozen.
        owned = isinstance(rule, OwnedForwardRule)
        if owned:
            rule.batch_size_of(module, args, {})
        batch_dim = self._batch_dims[-1] if self._batch_dims else 0
        if batch_dim and rule is FALLBACK_RULE:
            raise ValueError(
                f"adabatch: {type(module).__name__} runs with the batch in dimension 1 "
                "(batch_first=False) and has no closed-form rule; the torch.func fallback needs "
                "the batch first: build it (and its parents) with batch_first=True"
            )
        values = None
        if swapped and (rule is FALLBACK_RULE or rule.owns_input_grad(module)):
            # FSDP2 frees the gathered parameters after the forward and gathers them again
            # only after this module's tap has run its backward: the rules that read the
            # parameters' values (not only their shapes) get a copy taken now.
            values = {n: p.detach().clone() for n, p in module._parameters.items() if p is not None}
        for c in claims:
            c.param.requires_grad_(False)
        if owned:
            # The rule recomputes the output itself: the module's own forward runs on
            # detached inputs, without building a graph, and its output is replaced.
            self._in_flight[module].append(_InFlight(claims, args, values, swapped, 0))
            return tree_map(lambda a: a.detach() if isinstance(a, Tensor) else a, args)
        original = None
        if args and isinstance(args[0], Tensor) and rule.owns_input_grad(module):
            # The rule computes this layer's input gradient itself (one fused kernel), so the
            # module runs on a detached input and autograd skips the layer's backward.
            original = args[0]
            args = (original.detach(), *args[1:])
        self._in_flight[module].append(_InFlight(claims, original, values, swapped, batch_dim))
        return args if original is not None else None

    def _live_claims(self, module: nn.Module) -> tuple[tuple[Claim, ...], bool]:
        """The module's claims with the parameter objects its forward will use now.

        FSDP2 (``fully_shard``) registers a sharded parameter between calls and swaps the
        gathered (unsharded) one onto the module just before its forward: the gradient must
        flow into that gathered parameter, which FSDP then reduce-scatters into the shard.
        Returns the claims and whether they were swapped.
        """
        claims = self._claims[module]
        current = [owner._parameters.get(name) for owner, name in self._owners[module]]
        if all(p is c.param for p, c in zip(current, claims, strict=True)):
            return claims, False
        live = tuple(
            Claim(c.local, c.qualname, p) if p is not None else c
            for p, c in zip(current, claims, strict=True)
        )
        return live, True

    def _post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        stack = self._in_flight[module]
        if not stack:
            return None
        claims, original, values, swapped, batch_dim = stack.pop()
        for c in claims:
            c.param.requires_grad_(True)
        if output is None:  # the module raised; always_call brought us here to restore
            return None
        if self.batchnorm == "error" and is_batch_coupled(module):
            # The mode may have changed since attach (model.train()).
            raise batchnorm_error([type(module).__name__])
        rule = self._rules[module]
        if isinstance(rule, OwnedForwardRule):
            return self._owned_forward(module, claims, original, kwargs, output)
        verify = getattr(rule, "verify", None)
        if verify is not None and not swapped and module not in self._verified:
            # A layer of another library, matched by its class path: check once that it still
            # computes what the rule assumes (see stats/rules/external.py).
            inputs0 = original if original is not None else (args[0] if args else None)
            if isinstance(inputs0, Tensor) and isinstance(output, Tensor):
                with torch.no_grad():
                    verify(module, inputs0, output)
                self._verified.add(module)
        rest: tuple[Any, ...] | None = None
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            # e.g. MultiheadAttention's (output, None): tap the first element. Other tensors
            # would carry parameter gradients past the tap, so they are refused.
            rest = tuple(output[1:])
            # Nested too (an LSTM's (output, (h_n, c_n))): a tensor past the tap would carry
            # no parameter gradient at all, silently.
            if any(isinstance(x, Tensor) for x in tree_leaves(rest)):
                raise TypeError(
                    f"adabatch hooks engine: {type(module).__name__} returns several tensors; "
                    f"only the first can be tracked (for MultiheadAttention pass "
                    f"need_weights=False), or use engine='functorch'"
                )
            output = output[0]
        if not isinstance(output, Tensor):
            raise TypeError(
                f"adabatch hooks engine: {type(module).__name__} returned "
                f"{type(output).__name__}, expected a tensor"
            )
        # A submodule called directly (no root forward) opens its own pass.
        pass_ = self._passes[-1] if self._passes else self._new_pass(None)
        inputs = args[0] if args else None
        size = output.shape[batch_dim] if output.dim() > batch_dim else -1
        if pass_.batch_size is None:
            pass_.batch_size = size
        # NOTE [broadcast]: a call whose input and output hold one row inside a pass of b
        # samples is broadcast to the batch downstream (position embeddings looked up with
        # ids of shape (1, T), then added): its output is expanded to b rows (same values),
        # so that each sample's gradient δᵢ reaches the rule instead of their sum.
        broadcast = (
            batch_dim == 0
            and size == 1
            and pass_.batch_size > 1
            and (not isinstance(inputs, Tensor) or inputs.shape[:1] == (1,))
            and rule is not FALLBACK_RULE
        )
        if broadcast:
            size = pass_.batch_size
        elif size != pass_.batch_size or (
            isinstance(inputs, Tensor)
            and inputs.shape[batch_dim : batch_dim + 1] != output.shape[batch_dim : batch_dim + 1]
        ):
            raise ValueError(
                f"{type(module).__name__} received a batch of {size} while the model's input "
                f"has {pass_.batch_size} samples: the hooks engine needs every layer to keep "
                f"the batch as the first dimension; use engine='functorch' for this model"
            )
        for c in claims:
            pass_.uses[c.qualname] = pass_.uses.get(c.qualname, 0) + 1
        # Registered rules tap the output in place; the fallback (arbitrary forwards, which may
        # save their own output) taps a copy and keeps the inputs for its re-run.
        dirty = rule is not FALLBACK_RULE and not broadcast
        if original is not None:
            inputs = original
        saved = inputs if isinstance(inputs, Tensor) else None
        shape = None
        if dirty and output._is_view():
            base = whole_base(output)
            if base is None or swapped:
                # A partial view: tap a copy instead. Under FSDP2 (claims swapped) too: FSDP
                # hooked this very view to gather the parameters again for the backward,
                # and tapping its base would take the view out of the graph.
                dirty = False
            else:
                output, shape = base, output.shape
        site = Site(
            pass_,
            module,
            rule,
            claims,
            args if not dirty else (),
            kwargs if not dirty else {},
            original is not None and original.requires_grad,
            shape,
            values,
            pass_.batch_size if broadcast else None,
            batch_dim,
        )
        tapped = Tap.apply(self, site, dirty, output, saved, *(c.param for c in claims))
        if shape is not None:
            tapped = tapped.view(shape)
        return tapped if rest is None else (tapped, *rest)

    def _owned_forward(
        self, module: nn.Module, claims: tuple[Claim, ...], args: tuple, kwargs: dict, native: Any
    ) -> Any:
        """A rule that recomputes its layer (RNNs, attention): run it, collect its blocks.

        The rule returns the layer's output built from the live trainable parameters (so
        autograd accumulates their gradients as for any use) and, during the backward, hands
        ``on_blocks`` a function giving the per-sample blocks (hook scale) for a range of
        rows; their statistics go to the pass like a tapped call's.
        """
        rule = self._rules[module]
        assert isinstance(rule, OwnedForwardRule)
        if is_fsdp(module):
            raise ValueError(
                f"adabatch: {type(module).__name__} is an FSDP2 block of its own; its "
                "statistics recompute its forward, which FSDP2 cannot follow: shard the block "
                "that contains it (adabatch.distributed.wrap_model does)"
            )
        b = rule.batch_size_of(module, args, kwargs)
        pass_ = self._passes[-1] if self._passes else self._new_pass(None)
        if pass_.batch_size is None:
            pass_.batch_size = b
        if b != pass_.batch_size:
            dim = rule.batch_dim(module)
            raise ValueError(
                f"{type(module).__name__}(batch_first={dim == 0}) received a batch of {b} "
                f"(dimension {dim} of its input) while the model's input has "
                f"{pass_.batch_size} samples: the hooks engine needs the model's input batch "
                f"first"
            )
        for c in claims:
            pass_.uses[c.qualname] = pass_.uses.get(c.qualname, 0) + 1
            self._tapped.add(id(c.param))  # its gradient comes through the rule's own graph
        qualnames = tuple(c.qualname for c in claims)
        params = tuple(c.param for c in claims)

        def on_blocks(per_sample: Callable[[slice], dict[str, Tensor]]) -> None:
            if pass_.is_tied(qualnames):
                raise ValueError(
                    f"adabatch: {type(module).__name__} is called more than once in one "
                    "forward; its per-sample statistics support one call per forward"
                )
            device = params[0].device.type

            def rows_of(rows: slice) -> list[Tensor]:
                blocks = per_sample(rows)
                return [blocks[c.local] for c in claims]

            with torch.autocast(device, enabled=False):  # NOTE [autocast]
                result = reduce_per_sample(rows_of, b, params, self.need)
            pass_.backward_calls += 1
            pass_.add(result, qualnames)

        live = {c.local: c.param for c in claims}
        weights = {n: p.detach() for n, p in module.named_parameters() if n not in live}
        weights.update(live)
        # Under autocast the layer runs in the weights' dtype (NOTE [autocast]) and its
        # outputs take the dtypes of the module's own outputs.
        dtype = params[0].dtype
        cast = lambda t: t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t  # noqa: E731
        with torch.autocast(params[0].device.type, enabled=False):
            ours = rule.owned_forward(
                module,
                tree_map(cast, args),
                tree_map(cast, kwargs),
                weights,
                frozenset(live),
                on_blocks,
            )
        return tree_map(
            lambda t, n: t.to(n.dtype) if isinstance(t, Tensor) and isinstance(n, Tensor) else t,
            ours,
            native,
        )

    # ------------------------------------------------------------------ backward side
    def _make_coverage_hook(self, p: nn.Parameter):
        key = id(p)

        def hook(grad: Tensor) -> None:
            if self._suspended:
                return
            if key in self._tapped:
                self._tapped.discard(key)
                return
            raise RuntimeError(
                f"adabatch: parameter {self._names.get(key, '?')!r} received a gradient that no "
                f"per-sample rule saw (its module's forward was not called: it is used "
                f"functionally by another module). Its statistics would be wrong; use "
                f"engine='functorch', or give the module that uses it a rule"
            )

        return hook

    def _on_backward(
        self, site: Site, inputs: Tensor | None, grad_output: Tensor
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Called by `Tap.backward`: run the rule, record the pass, return the gradients."""
        pass_ = site.pass_
        pass_.backward_calls += 1
        if site.out_shape is not None:
            grad_output = grad_output.reshape(site.out_shape)
        if site.broadcast is not None and isinstance(inputs, Tensor):
            inputs = inputs.expand(site.broadcast, *inputs.shape[1:])  # one row, each sample's
        if site.batch_dim:  # NOTE [layout]: the rules take the batch first
            grad_output = grad_output.movedim(site.batch_dim, 0)
            if isinstance(inputs, Tensor):
                inputs = inputs.movedim(site.batch_dim, 0)
        # NOTE [autocast]: under torch.autocast the layer ran in bf16/fp16, its parameters are
        # float32. The statistics are computed in the parameters' dtype (inputs and δ cast up,
        # autocast off), so they are as exact as the mixed-precision forward allows; the input
        # gradient a rule owns goes back in the input's own dtype.
        dtype = site.params[0].dtype if site.params else grad_output.dtype
        in_dtype = inputs.dtype if isinstance(inputs, Tensor) else None
        if isinstance(inputs, Tensor) and inputs.is_floating_point() and in_dtype != dtype:
            inputs = inputs.to(dtype)
        delta = grad_output if grad_output.dtype == dtype else grad_output.to(dtype)
        call = LayerCall(
            site.module,
            inputs,
            delta,
            site.names,
            site.params,
            site.args,
            site.kwargs,
            input_grad=site.input_grad,
            values=site.values,
        )
        tied = pass_.is_tied(site.qualnames)
        previous = self._suspended
        self._suspended = True  # the functorch fallback re-runs forwards: no hooks inside
        try:
            with torch.autocast(grad_output.device.type, enabled=False):
                result = self._run_rule(site, call, tied)
        finally:
            self._suspended = previous
        tapped = self._tapped
        for p in site.params:
            tapped.add(id(p))
        grad_input = result.grad_input
        if grad_input is not None and in_dtype is not None and grad_input.dtype != in_dtype:
            grad_input = grad_input.to(in_dtype)
        if grad_input is not None and site.batch_dim:
            grad_input = grad_input.movedim(0, site.batch_dim)
        return grad_input, result.grads

    def _run_rule(self, site: Site, call: LayerCall, tied: bool) -> LayerResult:
        pass_ = site.pass_
        if tied:
            result = site.rule.compute(call, Need(max_block_bytes=self.need.max_block_bytes))
            pass_.add_tied(site.rule, call, result, site.qualnames)
        else:
            result = site.rule.compute(call, self.need)
            pass_.add(result, site.qualnames)
        return result

    # ------------------------------------------------------------------ reading
    def pop(self) -> GradStats:
        """Statistics of every pass since the last `pop` (merged with ``+``), and reset.

        Passes whose backward never ran (e.g. evaluation forwards under grad mode) are
        dropped. Passes over an empty batch (a rank's empty share) contribute nothing; if
        there were only such passes the result is `GradStats.empty`. Raises if no backward
        ran at all.
        """
        passes = [p for p in self._passes if p.backward_calls > 0]
        self._passes = []
        if not passes:
            raise RuntimeError(
                "GradStatsTracker.pop(): no backward pass through the model since the last "
                "pop(); call loss.backward() first"
            )
        passes = [p for p in passes if p.batch_size != 0]
        if not passes:
            return GradStats.empty(
                {n: p for n, p in self._named_params if p.requires_grad},
                inner_products=self.need.inner,
                coordinates=self.need.coords,
            )
        # Tied-parameter statistics are computed here, outside autograd's backward, from
        # saved activations that require grad: build no graph.
        with torch.no_grad():
            return sum_of(p.finalize(self._named_params, self.need) for p in passes)

    @property
    def num_passes(self) -> int:
        """How many passes (forwards through the model) are held since the last `pop`."""
        return len(self._passes)

    def reset(self, keep: int = 0) -> None:
        """Forget the passes since the last `pop`, except the first ``keep`` of them.

        ``reset(tracker.num_passes)`` taken before an attempt and called after it failed drops
        exactly the failed attempt's passes (what `adabatch.data.MicroBatcher` does after an
        out-of-memory error).
        """
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        del self._passes[keep:]


def hooks_stats(
    model: nn.Module,
    loss_fn: Any,
    inputs: Tensor,
    targets: Any,
    *,
    loss_reduction: str = "mean",
    inner_products: bool = False,
    coordinates: bool = False,
    batchnorm: str = "error",
) -> GradStats:
    """One batch through a temporary `GradStatsTracker` (attach, forward, backward, detach).

    In a training loop, attach a `GradStatsTracker` once instead: it saves re-registering the
    hooks every step.
    """
    with GradStatsTracker(
        model,
        loss_reduction=loss_reduction,  # type: ignore[arg-type]
        inner_products=inner_products,
        coordinates=coordinates,
        batchnorm=batchnorm,  # type: ignore[arg-type]
    ) as tracker:
        loss = check_loss(loss_fn(model(inputs), targets))
        loss.backward()
        return tracker.pop()
