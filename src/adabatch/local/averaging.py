"""What a synchronisation round does to the workers' parameters: average, or an outer step.

Local SGD (Stich 2019; Lin et al. 2020) lets W workers take H optimizer steps on their own
batches, then replaces every worker's parameters x_r by their mean x̄ = (1/W) Σ_r x_r. DiLoCo
(Douillard et al. 2023) treats the round as one step of an *outer* optimizer instead: with θ
the parameters all workers started the round from, the outer gradient is the mean displacement
Δ = θ − x̄, and θ ← OuterOpt(θ, Δ) (Nesterov SGD, lr 0.7, momentum 0.9 in the paper). With
outer lr 1 and no momentum that is plain averaging: θ − Δ = x̄.

The functions here are the pure parts (tensors in, tensors out); `adabatch.local.LocalSGD`
does the all-reduce and keeps the outer optimizer's state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor

from .._validate import check_nonnegative, check_positive

__all__ = ["OuterNesterov", "mean_of", "outer_gradient"]


def mean_of(summed: Sequence[Tensor], world: int) -> list[Tensor]:
    """``summed`` (all-reduced sums over ``world`` workers) divided by ``world``.

    Example:
        >>> mean_of([torch.tensor([2.0, 4.0])], 2)
        [tensor([1., 2.])]
    """
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    return [t / world for t in summed]


def outer_gradient(anchor: Sequence[Tensor], mean: Sequence[Tensor]) -> list[Tensor]:
    """DiLoCo's outer gradient Δ = θ − x̄: the round's mean displacement, as a descent direction.

    Example:
        >>> outer_gradient([torch.tensor([1.0])], [torch.tensor([0.25])])
        [tensor([0.7500])]
    """
    return [a - m for a, m in zip(anchor, mean, strict=True)]


@dataclasses.dataclass(frozen=True)
class OuterNesterov:
    """DiLoCo's outer optimizer: SGD with Nesterov momentum on the outer gradient.

    θ ← θ − lr·(Δ + μ·m'), m' = μ·m + Δ (torch.optim.SGD's Nesterov form), applied once per
    synchronisation round. ``lr=1, momentum=0`` is plain averaging.

    Attributes:
        lr: the outer learning rate (DiLoCo: 0.7).
        momentum: μ (DiLoCo: 0.9).
    """

    lr: float = 0.7
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check_positive("lr", self.lr, hint=" (DiLoCo: 0.7)")
        mu = check_nonnegative("momentum", self.momentum, hint=" (DiLoCo: 0.9)")
        if mu >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {mu}")

    def step(
        self, anchor: Sequence[Tensor], delta: Sequence[Tensor], buffers: Sequence[Tensor] | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """(new θ, new momentum buffers) from θ, Δ and the buffers (None: the first round)."""
        if buffers is None:
            new_buffers = [d.clone() for d in delta]
        else:
            new_buffers = [self.momentum * m + d for m, d in zip(buffers, delta, strict=True)]
        new_anchor = [
            a - self.lr * (d + self.momentum * m)
            for a, d, m in zip(anchor, delta, new_buffers, strict=True)
        ]
        return new_anchor, new_buffers
