"""Comparison helpers: every field of two GradStats, p.grad of two models."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from adabatch.stats import GradStats, compute_stats


def _dense(t: Tensor) -> Tensor:
    return t.to_dense() if t.is_sparse else t


def close(
    actual: Tensor | float, expected: Tensor | float, rtol: float, what: str, floor: float = 0.0
) -> None:
    """max|a − e| ≤ rtol · max(max|e|, floor).

    ``floor`` is the scale of the whole quantity (e.g. the largest gradient entry of any
    parameter): a parameter whose gradient is zero by construction (a bias before a norm
    layer) then compares at round-off level instead of relative to its own round-off.
    """
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    scale = float(e.abs().max()) if e.numel() else 0.0
    err = float((a - e).abs().max()) if e.numel() else 0.0
    bound = rtol * max(scale, floor, 1e-300)
    assert err <= bound, f"{what}: max error {err:.3g} vs scale {scale:.3g} (bound {bound:.3g})"


def _floor(tensors) -> float:
    """A round-off floor for a family of tensors: 1e-6 of the largest entry of any of them."""
    return 1e-6 * max((float(_dense(t).abs().max()) for t in tensors if t.numel()), default=0.0)


def assert_stats_close(
    actual: GradStats, expected: GradStats, rtol: float = 1e-9, skip: tuple[str, ...] = ()
) -> None:
    """Every field within ``rtol`` (the layer fields when ``expected`` has them), but ``skip``."""
    assert actual.num_samples == expected.num_samples
    assert actual.num_groups == expected.num_groups
    assert list(actual.grad_sum) == list(expected.grad_sum), "grad_sum keys differ"
    _maps_close(actual.grad_sum, expected.grad_sum, rtol, "grad_sum")
    close(actual.sum_sq_norms, expected.sum_sq_norms, rtol, "sum_sq_norms")
    assert (actual.sum_sq_inner is None) == (expected.sum_sq_inner is None)
    if expected.sum_sq_inner is not None:
        close(actual.sum_sq_inner, expected.sum_sq_inner, rtol, "sum_sq_inner")
        close(actual.group_norm4_sum, expected.group_norm4_sum, rtol, "group_norm4_sum")
        close(actual.group_ratio_sum, expected.group_ratio_sum, rtol, "group_ratio_sum")
    if expected.layer_inner_sum is not None:
        # The per-tensor ("layerwise") inner products, whenever the expected side has them.
        for field in ("layer_inner_sum", "layer_norm4_sum", "layer_ratio_sum"):
            if field in skip:
                continue
            value = getattr(actual, field)
            assert value is not None, f"{field} is missing"
            close(value, getattr(expected, field), rtol, field)
    assert (actual.coord_sq_sum is None) == (expected.coord_sq_sum is None)
    if expected.coord_sq_sum is not None:
        assert actual.coord_sq_sum is not None
        _maps_close(actual.coord_sq_sum, expected.coord_sq_sum, rtol, "coord_sq_sum")


def _maps_close(actual, expected, rtol: float, what: str) -> None:
    floor = _floor(expected.values())
    for name in expected:
        close(_dense(actual[name]), _dense(expected[name]), rtol, f"{what}[{name}]", floor)


def grads_of(model: nn.Module) -> dict[str, Tensor | None]:
    return {
        n: None if p.grad is None else _dense(p.grad).clone() for n, p in model.named_parameters()
    }


def assert_grads_close(actual: nn.Module, expected: nn.Module, rtol: float = 1e-9) -> None:
    ga, ge = grads_of(actual), grads_of(expected)
    assert ga.keys() == ge.keys()
    floor = _floor([e for e in ge.values() if e is not None])
    for name, e in ge.items():
        a = ga[name]
        assert (a is None) == (e is None), f"p.grad of {name}: one is None"
        if e is not None:
            close(a, e, rtol, f"p.grad[{name}]", floor)


def check(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    loss=None,
    reduction: str = "mean",
    skip: tuple[str, ...] = (),
    *,
    allow_fallback: bool = True,
    **kw,
) -> GradStats:
    """Hooks engine vs reference engine, float64, all fields but ``skip``; returns hooks stats.

    ``p.grad`` of the tracked copy is compared with the reference engine's (one backward);
    ``allow_fallback=False`` makes a torch.func fallback warning an error.
    """
    model = model.double()
    if x.is_floating_point():
        x = x.double()
    if y is None:
        y = torch.randint(0, 3, (x.shape[0],))
    loss = loss or nn.CrossEntropyLoss(reduction=reduction)
    ref_model, hook_model = copy.deepcopy(model), copy.deepcopy(model)
    opts = dict(loss_reduction=reduction, inner_products=True, coordinates=True, **kw)
    expected = compute_stats(ref_model, loss, x, y, engine="reference", **opts)
    with warnings.catch_warnings():
        if not allow_fallback:
            warnings.simplefilter("error", UserWarning)
        actual = compute_stats(hook_model, loss, x, y, engine="hooks", **opts)
    assert_stats_close(actual, expected, skip=skip)
    assert_grads_close(hook_model, ref_model)
    return actual
