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
and routes the output through `_Tap`, an identity autograd function that takes those
parameters as inputs. Autograd therefore does *not* compute the weight gradient of that
module; instead `_Tap.backward` receives δ = ∂L/∂output, asks the rule for the summed weight
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

Safety: a trainable parameter that receives a gradient through no rule — for example a child
module's weight used functionally by its parent — raises an error naming the parameter during
``backward()``, never a silently wrong statistic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._checks import (
    batchnorm_error,
    check_batchnorm_mode,
    check_reduction,
    is_batch_coupled,
)
from ..rules import FALLBACK_RULE, LayerCall, LayerRule, Need, find_rule
from ..rules.base import sum_of
from ..summary import GradStats

__all__ = ["BatchNormMode", "FallbackMode", "GradStatsTracker", "LossReduction"]

LossReduction = Literal["mean", "sum"]
BatchNormMode = Literal["error", "approximate"]
FallbackMode = Literal["functorch", "error"]

_FALLBACKS = ("functorch", "error")


@dataclasses.dataclass(frozen=True)
class _Claim:
    local: str  # name inside its module ("weight")
    qualname: str  # name in the model ("layer1.0.conv1.weight")
    param: nn.Parameter


class _Pass:
    """Statistics of one forward/backward pass (one micro-batch), in hook scale until read."""

    def __init__(self, batch_size: int | None) -> None:
        self.batch_size = batch_size
        self.grad_sum: dict[str, Tensor] = {}  # true scale (Σgᵢ)
        self.sq_terms: list[Tensor] = []
        self.inner: Tensor | None = None
        self.coords: dict[str, Tensor] = {}
        self.uses: dict[str, int] = {}
        self.deferred: list[tuple[LayerRule, LayerCall, tuple[str, ...]]] = []
        self.backward_calls = 0


class _Site:
    """One call of one module in one pass, carried by the autograd graph to its backward."""

    __slots__ = (
        "args",
        "input_grad",
        "out_shape",
        "kwargs",
        "module",
        "names",
        "params",
        "pass_",
        "qualnames",
        "rule",
    )

    def __init__(
        self,
        pass_: _Pass,
        module: nn.Module,
        rule: LayerRule,
        claims: tuple[_Claim, ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        input_grad: bool,
    ) -> None:
        self.pass_ = pass_
        self.module = module
        self.rule = rule
        self.names = tuple(c.local for c in claims)
        self.params = tuple(c.param for c in claims)
        self.qualnames = tuple(c.qualname for c in claims)
        self.args = args
        self.kwargs = kwargs
        self.input_grad = input_grad
        self.out_shape: torch.Size | None = None  # set when the tap holds the output's base


class _Tap(torch.autograd.Function):
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
            # backward never saves their own output. Never a view: see `_untapped_base`.
            ctx.mark_dirty(output)
            return output
        return output.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        inputs = ctx.saved_tensors[0] if ctx.has_inputs else None
        grad_input, grads = ctx.tracker._on_backward(ctx.site, inputs, grad_output)
        return (None, None, None, grad_output, grad_input, *grads)


def _whole_base(view: Tensor) -> Tensor | None:
    """The base of ``view`` if ``view`` is a contiguous reshape of all of it, else None.

    Linear on (b, T, d) and Embedding return such reshapes of a 2-D result. Marking the view
    dirty would make autograd rebuild the base in the backward (CopySlices: two extra copies of
    the gradient); tapping the base and reshaping after the tap costs nothing.
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
    ) -> None:
        check_reduction(loss_reduction)
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
        check_batchnorm_mode(model, batchnorm)
        if max_block_bytes < 1:
            raise ValueError(f"max_block_bytes must be >= 1, got {max_block_bytes}")
        self.model = model
        self.loss_reduction = loss_reduction
        self.batchnorm = batchnorm
        self.need = Need(inner=inner_products, coords=coordinates, max_block_bytes=max_block_bytes)
        self._handles: list[Any] = []
        self._claims: dict[nn.Module, tuple[_Claim, ...]] = {}
        self._rules: dict[nn.Module, LayerRule] = {}
        self._dirty: dict[nn.Module, bool] = {}
        # Per module, the calls whose forward is running: (claims, original input if the
        # rule owns the input gradient and the module runs on a detached copy).
        self._in_flight: dict[nn.Module, list[tuple[tuple[_Claim, ...], Tensor | None]]] = {}
        self._passes: list[_Pass] = []
        self._suspended = False
        self._tapped: set[int] = set()
        self._named_params = list(model.named_parameters())
        self._names = {id(p): n for n, p in self._named_params}
        self._attach(fallback, check_coverage)

    # ------------------------------------------------------------------ attach / detach
    def _attach(self, fallback: str, check_coverage: bool) -> None:
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
                        f"adabatch.stats.rules.RULES"
                    )
                rule = FALLBACK_RULE
                fallbacks.append(f"{mod_name or '<root>'} ({type(module).__name__})")
                if isinstance(module, nn.MultiheadAttention):
                    # MHA uses its out_proj's parameters functionally: claim the subtree.
                    direct = list(module.named_parameters())
                    covered.update(module.modules())
                self._dirty[module] = False
            else:
                rule.check(module)
                self._dirty[module] = True
            if not direct:
                continue
            claims = tuple(_Claim(n, self._names[id(p)], p) for n, p in direct)
            self._claims[module] = claims
            self._rules[module] = rule
            self._in_flight[module] = []
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(
                module.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True)
            )
        self._handles.append(
            self.model.register_forward_pre_hook(self._root_pre_hook, with_kwargs=True)
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

    def remove(self) -> None:
        """Detach every hook; the model is left exactly as it was."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for stack in self._in_flight.values():
            for claims, _ in stack:
                for c in claims:
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

    # ------------------------------------------------------------------ forward side
    def _root_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._suspended or not torch.is_grad_enabled():
            return
        first = _first_tensor(args, kwargs)
        size = first.shape[0] if first is not None and first.dim() > 0 else None
        self._passes.append(_Pass(size))

    def _pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._suspended or not torch.is_grad_enabled():
            return None
        claims = tuple(c for c in self._claims[module] if c.param.requires_grad)
        if not claims:
            return None
        for c in claims:
            c.param.requires_grad_(False)
        original = None
        if args and isinstance(args[0], Tensor) and self._rules[module].owns_input_grad(module):
            # The rule computes this layer's input gradient itself (one fused kernel), so the
            # module runs on a detached input and autograd skips the layer's backward.
            original = args[0]
            args = (original.detach(), *args[1:])
        self._in_flight[module].append((claims, original))
        return args if original is not None else None

    def _post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        stack = self._in_flight[module]
        if not stack:
            return None
        claims, original = stack.pop()
        for c in claims:
            c.param.requires_grad_(True)
        if output is None:  # the module raised; always_call brought us here to restore
            return None
        if self.batchnorm == "error" and is_batch_coupled(module):
            # The mode may have changed since attach (model.train()).
            raise batchnorm_error([type(module).__name__])
        rest: tuple[Any, ...] | None = None
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            # e.g. MultiheadAttention's (output, None): tap the first element. Other tensors
            # would carry parameter gradients past the tap, so they are refused.
            rest = tuple(output[1:])
            if any(isinstance(x, Tensor) for x in rest):
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
        if not self._passes:
            self._passes.append(_Pass(None))
        pass_ = self._passes[-1]
        inputs = args[0] if args else None
        size = output.shape[0] if output.dim() > 0 else -1
        if pass_.batch_size is None:
            pass_.batch_size = size
        if size != pass_.batch_size or (
            isinstance(inputs, Tensor) and inputs.shape[:1] != output.shape[:1]
        ):
            raise ValueError(
                f"{type(module).__name__} received a batch of {size} while the model's input "
                f"has {pass_.batch_size} samples: the hooks engine needs every layer to keep "
                f"the batch as the first dimension; use engine='functorch' for this model"
            )
        for c in claims:
            pass_.uses[c.qualname] = pass_.uses.get(c.qualname, 0) + 1
        dirty = self._dirty[module]
        rule = self._rules[module]
        if original is not None:
            inputs = original
        saved = inputs if isinstance(inputs, Tensor) else None
        shape = None
        if dirty and output._is_view():
            base = _whole_base(output)
            if base is None:
                dirty = False  # a partial view: tap a copy instead
            else:
                output, shape = base, output.shape
        site = _Site(
            pass_,
            module,
            rule,
            claims,
            args if not dirty else (),
            kwargs if not dirty else {},
            original is not None and original.requires_grad,
        )
        site.out_shape = shape
        tapped = _Tap.apply(self, site, dirty, output, saved, *(c.param for c in claims))
        if shape is not None:
            tapped = tapped.view(shape)
        return tapped if rest is None else (tapped, *rest)

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
        self, site: _Site, inputs: Tensor | None, grad_output: Tensor
    ) -> tuple[Tensor | None, list[Tensor]]:
        pass_ = site.pass_
        pass_.backward_calls += 1
        if site.out_shape is not None:
            grad_output = grad_output.reshape(site.out_shape)
        call = LayerCall(
            site.module,
            inputs,
            grad_output,
            site.names,
            site.params,
            site.args,
            site.kwargs,
            input_grad=site.input_grad,
        )
        tied = any(pass_.uses[q] > 1 for q in site.qualnames)
        previous = self._suspended
        self._suspended = True  # the functorch fallback re-runs forwards: no hooks inside
        try:
            if tied:
                result = site.rule.compute(call, Need(max_block_bytes=self.need.max_block_bytes))
                pass_.deferred.append((site.rule, call, site.qualnames))
            else:
                result = site.rule.compute(call, self.need)
        finally:
            self._suspended = previous
        scale = self._scale(pass_)
        grad_sum = pass_.grad_sum
        for q, g in zip(site.qualnames, result.grads, strict=True):
            # A copy: autograd may hand `g` itself to p.grad, which the user may then modify.
            if q in grad_sum:
                grad_sum[q] = torch.add(grad_sum[q], g, alpha=scale)
            else:
                grad_sum[q] = g * scale if scale != 1.0 else g.clone()
        if not tied:
            pass_.sq_terms.append(result.sq_norm)
            if result.inner is not None:
                pass_.inner = result.inner if pass_.inner is None else pass_.inner + result.inner
            if result.coord_sq is not None:
                for q, m in zip(site.qualnames, result.coord_sq, strict=True):
                    pass_.coords[q] = pass_.coords[q] + m if q in pass_.coords else m
        tapped = self._tapped
        for p in site.params:
            tapped.add(id(p))
        return result.grad_input, result.grads

    def _scale(self, pass_: _Pass) -> float:
        assert pass_.batch_size is not None
        return float(pass_.batch_size) if self.loss_reduction == "mean" else 1.0

    # ------------------------------------------------------------------ reading
    def pop(self) -> GradStats:
        """Statistics of every pass since the last `pop` (merged with ``+``), and reset.

        Passes whose backward never ran (e.g. evaluation forwards under grad mode) are
        dropped. Raises if no backward ran at all.
        """
        passes = [p for p in self._passes if p.backward_calls > 0]
        self._passes = []
        if not passes:
            raise RuntimeError(
                "GradStatsTracker.pop(): no backward pass through the model since the last "
                "pop(); call loss.backward() first"
            )
        # Tied-parameter statistics are computed here, outside autograd's backward, from
        # saved activations that require grad: build no graph.
        with torch.no_grad():
            return sum_of(self._finalize(p) for p in passes)

    def reset(self) -> None:
        """Forget every pass since the last `pop`."""
        self._passes = []

    def _finalize(self, pass_: _Pass) -> GradStats:
        b = pass_.batch_size
        assert b is not None
        s = self._scale(pass_)
        if pass_.deferred:
            self._finalize_tied(pass_, s)
        grad_sum: dict[str, Tensor] = {}
        for name, p in self._named_params:
            if name in pass_.grad_sum:
                grad_sum[name] = pass_.grad_sum[name]
            elif p.requires_grad:
                grad_sum[name] = torch.zeros_like(p)
        if pass_.sq_terms:
            terms = pass_.sq_terms
            sq = (terms[0] if len(terms) == 1 else torch.stack(terms).sum()).double() * s**2
        else:
            sq = torch.zeros((), dtype=torch.float64)
        p2 = None
        if self.need.inner:
            if pass_.inner is None:
                p2 = torch.zeros((), dtype=torch.float64)
            else:
                p = pass_.inner.to(torch.float64) * (s**2 / b)
                p2 = torch.dot(p, p)
        coords = None
        if self.need.coords:
            coords = {}
            for name in grad_sum:
                m = pass_.coords.get(name)
                coords[name] = m * s**2 if m is not None else torch.zeros_like(grad_sum[name])
        return GradStats.from_batch(b, grad_sum, sq, p2, coords)

    def _finalize_tied(self, pass_: _Pass, s: float) -> None:
        """Statistics of calls sharing parameters: per-sample blocks summed across calls."""
        b = pass_.batch_size
        assert b is not None
        # Hook-scale total gradient of every parameter touched by a deferred call.
        totals = {q: pass_.grad_sum[q] / s for _, _, qs in pass_.deferred for q in qs}
        numel = sum(t.numel() for t in totals.values())
        itemsize = next(iter(totals.values())).element_size()
        rows_per_block = max(1, self.need.max_block_bytes // max(1, numel * itemsize))
        inner_parts: list[Tensor] = []
        for start in range(0, b, rows_per_block):
            rows = slice(start, min(b, start + rows_per_block))
            blocks: dict[str, Tensor] = {}
            for rule, call, qs in pass_.deferred:
                for q, g in zip(qs, rule.per_sample(call, rows), strict=True):
                    blocks[q] = blocks[q] + g if q in blocks else g
            m = rows.stop - rows.start
            flat = {q: g.reshape(m, -1) for q, g in blocks.items()}
            pass_.sq_terms.append(
                sum_of(torch.dot(f.reshape(-1), f.reshape(-1)) for f in flat.values())
            )
            if self.need.inner:
                inner_parts.append(sum_of(f @ totals[q].reshape(-1) for q, f in flat.items()))
            if self.need.coords:
                for q, g in blocks.items():
                    sq = (g * g).sum(0)
                    pass_.coords[q] = pass_.coords[q] + sq if q in pass_.coords else sq
        if inner_parts:
            inner = torch.cat(inner_parts)
            pass_.inner = inner if pass_.inner is None else pass_.inner + inner
        pass_.deferred.clear()
