"""NOTE [layout probe]: checking by the batch's identity, not its size, where each layer keeps it.

Every rule reads sample i from index i of a layer's batch dimension (0, or 1 inside torch's
``batch_first=False`` layers). A layer fed a tensor whose batch is elsewhere — a sequence-first
tensor given to a Linear by the model's own code, with the sequence as long as the batch —
passes every size check and yields wrong statistics. So on the first pass of a tracker, the
model runs twice more without gradients (same random streams): once on its input, once with
sample 0 of the input changed. In every tracked layer's output only row 0 of the batch
dimension may change; a change anywhere else means that dimension does not hold the batch (or
that the layer mixes samples, which per-sample gradients cannot describe either), and the
tracker refuses with the layer's name. It costs two forward passes, once (a forward with side
effects — a counter, a cache — sees them too; ``check_layout=False`` skips the probe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

__all__ = ["changed_rows", "perturbed_first_sample", "probe_layout"]


def perturbed_first_sample(x: Tensor, dim: int) -> Tensor | None:
    """A copy of ``x`` whose sample 0 (along ``dim``) differs; None if none can be made."""
    out = x.clone()
    row = out.select(dim, 0)
    if x.is_floating_point() or x.is_complex():
        row.add_(1.0)
    else:
        top = int(x.max()) + 1 if x.numel() else 0
        if top < 2:
            return None  # ids of one value only: nothing to change them to
        row.copy_((row + 1) % top)
    return out


def changed_rows(a: Tensor, b: Tensor, dim: int) -> list[int]:
    """Indices along ``dim`` where ``a`` and ``b`` differ."""
    diff = a.ne(b)
    if diff.dim() > 1:
        diff = diff.movedim(dim, 0).reshape(diff.shape[dim], -1).any(1)
    return torch.nonzero(diff).flatten().tolist()


def probe_layout(
    model: nn.Module,
    modules: Iterable[nn.Module],
    batch_dim_of: Callable[[nn.Module, tuple], int],
    args: tuple,
    kwargs: dict,
    input_dim: int,
) -> list[str]:
    """The tracked layers whose output's batch dimension is not where the rules read it.

    Args:
        model: the root module, called twice (the caller pauses its own hooks).
        modules: the tracked modules.
        batch_dim_of: ``(module, inputs)`` → the batch dimension of the module's output for the
            rules, at call time (it may raise the rule's own error for inputs it refuses).
        args: the root's positional inputs; the first tensor among them holds the batch.
        kwargs: the root's keyword inputs.
        input_dim: the batch dimension of that tensor.
    """
    leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
    if not leaves or leaves[0].dim() <= input_dim or leaves[0].shape[input_dim] < 2:
        return []
    first = leaves[0]
    changed = perturbed_first_sample(first, input_dim)
    if changed is None:
        return []
    swap = lambda t: changed if t is first else t  # noqa: E731
    args2 = tuple(swap(a) for a in args)
    kwargs2 = {k: swap(v) for k, v in kwargs.items()}

    runs: list[list[tuple[nn.Module, int, Tensor]]] = [[], []]
    current: list[list[tuple[nn.Module, int, Tensor]]] = [runs[0]]

    def capture(module: nn.Module, inputs: Any, output: Any) -> None:
        out = next((t for t in tree_leaves(output) if isinstance(t, Tensor)), None)
        if out is not None:
            current[0].append((module, batch_dim_of(module, inputs), out.detach().clone()))

    handles = [m.register_forward_hook(capture) for m in modules]
    # Every device's stream: a model spread over GPUs draws dropout on each of them.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            cpu = torch.get_rng_state()
            cuda = torch.cuda.get_rng_state_all() if devices else None
            model(*args, **kwargs)
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
            current[0] = runs[1]
            model(*args2, **kwargs2)
    finally:
        for h in handles:
            h.remove()
    names = {m: n for n, m in model.named_modules()}
    problems = []
    for (module, dim, a), (_, _, b) in zip(runs[0], runs[1], strict=False):
        if a.shape != b.shape or a.dim() <= dim or a.shape[dim] < 2:
            continue
        rows = [r for r in changed_rows(a, b, dim) if r != 0]
        if rows:
            problems.append(
                f"{names.get(module, '?') or '<root>'} ({type(module).__name__}): changing "
                f"sample 0 of the model's input changed rows {rows[:5]} of dimension {dim} "
                "of its output"
            )
    return problems
