r"""AdaGrad-Norm: AdaGrad with one step size per parameter group (or per row).

AdaGrad-Norm (Ward, Wu & Bottou, "AdaGrad stepsizes: sharp convergence over nonconvex
landscapes", ICML 2019 / JMLR 2020, arXiv 1806.01811) replaces AdaGrad's per-coordinate
accumulator by a single scalar fed with the squared norm of the whole gradient:

.. math::

    v_{k+1} = v_k + \|g_k\|^2, \qquad
    x_{k+1} = x_k - \alpha \, \frac{g_k}{\sqrt{v_{k+1}} + \epsilon}, \qquad v_0 > 0.

It is the step-size rule analysed by AdAdaGrad-Norm (Lau, Liu & Kolar, arXiv 2402.11215) and
AdaBatchGrad (Ostroukhov et al., arXiv 2402.05264). :func:`adagrad_norm_step` is the pure
functional core; :class:`AdaGradNorm` wraps it in the ``torch.optim.Optimizer`` anatomy
(hyper-parameters in ``param_groups``, accumulators in ``state``), so ``state_dict`` /
``load_state_dict`` round-trip everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from .._validate import check_choice, check_nonnegative, check_positive

__all__ = ["NORM_MODES", "AdaGradNorm", "adagrad_norm_step"]

Mode = Literal["global", "rowwise"]

#: The accumulator layouts :class:`AdaGradNorm` and :func:`adagrad_norm_step` accept.
NORM_MODES: tuple[str, ...] = ("global", "rowwise")

# Keys of the accumulators in ``optimizer.state[p]``; distinct per mode so that a state
# saved in one mode is never silently read as the other.
_GLOBAL_KEY = "norm_sum"
_ROWWISE_KEY = "row_sum"


def adagrad_norm_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    accumulators: Tensor | Sequence[Tensor],
    *,
    lr: float,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    mode: Mode = "global",
    maximize: bool = False,
) -> None:
    r"""One AdaGrad-Norm step, in place on ``params`` and ``accumulators``.

    With :math:`g = \pm\nabla f(x) + \lambda x` (sign ``-`` when ``maximize``, ``λ`` =
    ``weight_decay``: coupled L2 decay, added to the gradient before it is accumulated, as in
    ``torch.optim.Adagrad``):

    ``mode="global"`` (Ward, Wu & Bottou 2019): one scalar ``v`` for all of ``params``,

    .. math::

        v \leftarrow v + \sum_{p} \|g_p\|^2, \qquad
        p \leftarrow p - \text{lr}\, \frac{g_p}{\sqrt{v} + \epsilon}.

    ``mode="rowwise"`` (the variant in the AdAdaGrad authors' code): one accumulator per
    index ``i`` of the first dimension of each parameter,

    * a parameter with two or more dimensions (linear weight ``(out, in)``, convolution
      weight ``(out, in, kh, kw)``, ...) adds its row norms ``‖g[i]‖²`` (``g[i]`` = the slice
      of ``g`` at index ``i`` of dim 0, all other dimensions flattened);
    * a 1-D parameter (bias, normalisation scale/shift) has rows of one element and adds
      ``g[i]²`` — plus, reproducing the authors' code, the row norms of the most recent
      parameter with two or more dimensions earlier in ``params`` (in this call), when its
      number of rows ``R`` is a multiple of the vector's length ``n``: element ``i`` then
      gets the mean of rows ``i·R/n … (i+1)·R/n − 1``, i.e. exactly ``‖W[i]‖²`` for the usual
      case of a bias (or a BatchNorm scale/shift) following its weight with ``R = n``;
    * a 0-D parameter adds ``g²``;

    then every entry of ``p[i]`` moves by ``-lr · g[i] / (√acc[i] + ε)``. The borrowing makes
    the row-wise result depend on the order of ``params``; a vector passed in a call without
    a matrix before it (e.g. alone in its parameter group) accumulates ``g[i]²`` only.

    Runs under ``torch.no_grad()``, so leaf parameters can be passed as they are.

    Args:
        params: Parameters to update (no ``None``; skipping parameters without a gradient is
            the caller's job).
        grads: Their gradients, dense, aligned with ``params``; not modified.
        accumulators: ``"global"``: one 0-D tensor ``v`` shared by all of ``params``.
            ``"rowwise"``: one tensor per parameter, of shape ``p.shape[:1]`` (``()`` for a
            0-D parameter).
        lr: Step size α.
        weight_decay: Coupled L2 coefficient λ ≥ 0.
        eps: Added to the square root of the accumulator; ``0`` is the exact theory.
        mode: ``"global"`` or ``"rowwise"``.
        maximize: Ascend instead of descend.

    Raises:
        ValueError: ``mode`` unknown, or ``accumulators`` not laid out for ``mode``.
    """
    check_choice("mode", mode, NORM_MODES)
    if len(params) != len(grads):
        raise ValueError(f"got {len(params)} params but {len(grads)} grads")
    if mode == "global":
        if not isinstance(accumulators, Tensor) or accumulators.dim() != 0:
            raise ValueError(
                "mode='global' needs one 0-D accumulator tensor shared by all params, got "
                f"{_describe(accumulators)}"
            )
    elif isinstance(accumulators, Tensor) or len(accumulators) != len(params):
        raise ValueError(
            f"mode='rowwise' needs one accumulator per param ({len(params)}), got "
            f"{_describe(accumulators)}"
        )
    if not params:
        return
    with torch.no_grad():
        decayed = [
            _effective_grad(p, g, weight_decay, maximize)
            for p, g in zip(params, grads, strict=True)
        ]
        if isinstance(accumulators, Tensor):
            _global_step(params, decayed, accumulators, lr=lr, eps=eps)
        else:
            _rowwise_step(params, decayed, accumulators, lr=lr, eps=eps)


def _effective_grad(param: Tensor, grad: Tensor, weight_decay: float, maximize: bool) -> Tensor:
    """``±grad + weight_decay · param``: maximize flips the loss, not the decay (as torch)."""
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g.add(param, alpha=weight_decay)
    return g


def _global_step(
    params: Sequence[Tensor], grads: Sequence[Tensor], acc: Tensor, *, lr: float, eps: float
) -> None:
    squares = [torch.linalg.vector_norm(g).square().to(acc) for g in grads]
    acc.add_(torch.stack(squares).sum())
    denom = acc.sqrt().add_(eps)  # a 0-D tensor on the device: no host synchronisation
    for p, g in zip(params, grads, strict=True):
        p.addcdiv_(g, denom, value=-lr)


def _rowwise_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    accs: Sequence[Tensor],
    *,
    lr: float,
    eps: float,
) -> None:
    last_rows: Tensor | None = None  # row norms² of the latest ≥2-D parameter seen
    for p, g, acc in zip(params, grads, accs, strict=True):
        if acc.shape != p.shape[:1]:
            raise ValueError(
                f"rowwise accumulator of shape {tuple(acc.shape)} does not fit a parameter of "
                f"shape {tuple(p.shape)} (expected {tuple(p.shape[:1])})"
            )
        if g.dim() >= 2:
            rows = torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))).square()
            acc.add_(rows)
            last_rows = rows
        else:
            n = g.numel()
            if g.dim() == 1 and last_rows is not None and n > 0 and last_rows.numel() % n == 0:
                acc.add_(last_rows.view(n, -1).mean(dim=1))
            acc.addcmul_(g, g)
        denom = acc.sqrt().add_(eps)
        p.addcdiv_(g, denom.view(denom.shape + (1,) * (g.dim() - denom.dim())), value=-lr)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Sequence):
        return f"a sequence of {len(value)}"
    return repr(value)


class AdaGradNorm(torch.optim.Optimizer):
    r"""AdaGrad-Norm (Ward, Wu & Bottou 2019) and the AdAdaGrad authors' row-wise variant.

    AdaGrad itself (one accumulator per coordinate) is :class:`torch.optim.Adagrad`.

    ``mode="global"``: one scalar accumulator per **parameter group**,
    ``v ← v + Σ_p ‖g_p‖²``, ``p ← p − lr · g_p / (√v + eps)``. With all parameters in one
    group (``AdaGradNorm(model.parameters())``) this is exactly the theory's single scalar step
    size; separate groups get separate scalars (a per-group AdaGrad-Norm), which is the natural
    ``torch.optim`` reading of groups.

    ``mode="rowwise"``: the variant the AdAdaGrad-Norm authors run (timlautk/AdAdaGrad,
    ``adagradnorm.py``): one accumulator per index of the first dimension (output row or
    channel) of each parameter; see :func:`adagrad_norm_step` for exactly what vectors (biases,
    normalisation parameters) accumulate. Differences from that code, all in cases its
    experiments do not exercise: weight decay is the coupled L2 of ``torch.optim.Adagrad``
    (theirs moves ``p`` by an extra ``-lr·weight_decay·g``, which is not a decay of ``p``);
    their ``momentum`` and ``lr_decay`` (both 0 by default) are not offered; parameters of 3 or
    ≥5 dimensions are row-wise here (theirs treats only 2-D and 4-D row-wise); a vector borrows
    row norms only from a matrix of its own parameter group and call (theirs carries them across
    groups); rows are stored once rather than broadcast over each row's entries.

    Defaults: ``lr=1e-2`` (as ``torch.optim.Adagrad``; the authors' class defaults to 1.0 —
    AdaGrad-Norm's first step has length about ``lr`` in parameter space whatever the gradient
    scale, so tune it like a distance); ``initial_accumulator_value=1e-2`` (``v_0``, the
    authors' default, i.e. ``b_0 = 0.1``; ``mode="global"`` requires ``v_0 > 0`` as the theory
    does); ``eps=1e-10`` added to ``√v`` (as ``torch.optim.Adagrad`` and the authors' code;
    ``0`` is the exact theory and is safe in ``"global"`` mode since ``v_0 > 0``).

    State: ``"global"`` mode keeps its 0-D accumulator in ``state[group["params"][0]]`` under
    ``"norm_sum"`` (torch's ``state_dict`` serialises only per-parameter state, and so restores
    it); ``"rowwise"`` keeps a tensor of shape ``p.shape[:1]`` per parameter under
    ``"row_sum"``. Accumulators are created at the first step, in the parameter's dtype and on
    its device: ``load_state_dict`` casts floating state to the parameter's dtype anyway, so any
    other dtype (float64, say) would change on resume and a resumed run would no longer continue
    identically; float64 is also missing on some devices (MPS). With low-precision parameters
    (bf16/fp16) the running sum stalls once it dwarfs ‖g‖²; keep float32 master weights (as
    ``torch.autocast`` does) in that case. Parameters whose ``grad`` is ``None`` are skipped
    (they neither move nor contribute to ``v``). Sparse gradients and complex parameters are
    not supported.

    Args:
        params: Parameters or parameter groups (dicts may override any hyper-parameter below,
            ``mode`` included).
        lr: Step size α > 0.
        mode: ``"global"`` (one scalar per group) or ``"rowwise"`` (the authors' variant).
        initial_accumulator_value: ``v_0`` ≥ 0 for every accumulator (> 0 in ``"global"``).
        weight_decay: Coupled L2 coefficient ≥ 0, added to the gradient before accumulation.
        eps: ≥ 0, added to the square root of the accumulator.
        maximize: Maximise the objective instead of minimising it.

    Raises:
        ValueError: A hyper-parameter is out of range or ``mode`` is unknown (the message names
            the value received), or a parameter is complex.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = AdaGradNorm(model.parameters(), lr=0.1)
        >>> model(torch.ones(2, 3)).sum().backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        *,
        mode: Mode = "global",
        initial_accumulator_value: float = 1e-2,
        weight_decay: float = 0.0,
        eps: float = 1e-10,
        maximize: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "mode": mode,
            "initial_accumulator_value": initial_accumulator_value,
            "weight_decay": weight_decay,
            "eps": eps,
            "maximize": maximize,
        }
        _validate_hyperparameters(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, checking its hyper-parameters (overrides included) first.

        Raises:
            ValueError: As for the constructor.
        """
        _validate_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)  # normalises "params" (a generator, names, ...)
        for p in self.param_groups[-1]["params"]:
            if p.is_complex():
                self.param_groups.pop()
                raise ValueError(
                    f"AdaGradNorm does not support complex parameters, got {p.dtype} of shape "
                    f"{tuple(p.shape)}"
                )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step on every parameter that has a gradient.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss; it
                is called (with gradients enabled) before the update.

        Returns:
            The closure's loss, or ``None`` without a closure.

        Raises:
            RuntimeError: A gradient is sparse.
            ValueError: The state holds accumulators of another mode (e.g. a state dict
                saved in ``"rowwise"`` mode loaded into a ``"global"`` group).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        "AdaGradNorm does not support sparse gradients (parameter of shape "
                        f"{tuple(p.shape)}); use torch.optim.Adagrad, which does, or a dense "
                        "embedding (nn.Embedding(..., sparse=False))"
                    )
                params.append(p)
                grads.append(p.grad)
            if not params:
                continue
            init = group["initial_accumulator_value"]
            accumulators: Tensor | list[Tensor]
            if group["mode"] == "global":
                holder = group["params"][0]
                state = self.state[holder]
                _check_state_mode(state, "global", holder)
                if _GLOBAL_KEY not in state:
                    state[_GLOBAL_KEY] = torch.full(
                        (), init, dtype=holder.dtype, device=holder.device
                    )
                accumulators = state[_GLOBAL_KEY]
            else:
                accumulators = []
                for p in params:
                    state = self.state[p]
                    _check_state_mode(state, "rowwise", p)
                    if _ROWWISE_KEY not in state:
                        state[_ROWWISE_KEY] = torch.full(
                            p.shape[:1], init, dtype=p.dtype, device=p.device
                        )
                    accumulators.append(state[_ROWWISE_KEY])
            adagrad_norm_step(
                params,
                grads,
                accumulators,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                mode=group["mode"],
                maximize=group["maximize"],
            )
        return loss


def _check_state_mode(state: dict[str, Any], mode: str, param: Tensor) -> None:
    other = _ROWWISE_KEY if mode == "global" else _GLOBAL_KEY
    if other in state:
        raise ValueError(
            f"state of the parameter of shape {tuple(param.shape)} holds {other!r}, an "
            f"accumulator of the other mode, but its group has mode={mode!r}; a state dict "
            "loads only into an optimizer of the same mode"
        )


def _validate_hyperparameters(group: dict[str, Any]) -> None:
    mode = check_choice("mode", group["mode"], NORM_MODES)
    check_positive("lr", group["lr"])
    eps = check_nonnegative("eps", group["eps"])
    check_nonnegative("weight_decay", group["weight_decay"])
    init = check_nonnegative("initial_accumulator_value", group["initial_accumulator_value"])
    if init == 0 and mode == "global":
        raise ValueError(
            "initial_accumulator_value must be > 0 in mode='global', got "
            f"{group['initial_accumulator_value']!r}: AdaGrad-Norm's analysis needs v_0 > 0, "
            "and with v_0 = 0 a zero first gradient makes the first step 0/0 (NaN) when eps = 0"
        )
    if init == 0 and eps == 0:
        raise ValueError(
            "initial_accumulator_value = 0 with eps = 0 divides 0 by 0 on any row whose "
            "gradient is still zero (NaN); make one of them positive"
        )
    if not isinstance(group["maximize"], bool):
        raise TypeError(f"maximize must be a bool, got {group['maximize']!r}")
