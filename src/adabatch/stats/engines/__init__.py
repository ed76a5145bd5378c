"""Statistics engines: an explicit registry, name → function with one signature.

Every engine runs the forward and backward pass, leaves ``p.grad`` as
``loss_fn(model(inputs), targets).backward()`` would, and returns the batch's `GradStats`.

==========  ====================================================  ==========================
name        how                                                   use it for
==========  ====================================================  ==========================
hooks       per-layer closed forms inside the ordinary backward   training (default, fast)
functorch   torch.func vmap(grad) over the whole model            models without rules
reference   one autograd.grad per sample                          tests (the oracle)
==========  ====================================================  ==========================
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from .._checks import check_loss
from ..summary import GradStats
from .functorch import functorch_stats
from .hooks import GradStatsTracker
from .reference import reference_stats

__all__ = [
    "ENGINES",
    "Engine",
    "GradStatsTracker",
    "functorch_stats",
    "hooks_stats",
    "reference_stats",
]


class Engine(Protocol):
    """The signature every registered engine has."""

    def __call__(
        self,
        model: nn.Module,
        loss_fn: Any,
        inputs: Tensor,
        targets: Any,
        *,
        loss_reduction: str = ...,
        inner_products: bool = ...,
        coordinates: bool = ...,
        batchnorm: str = ...,
    ) -> GradStats:
        """Run forward and backward; return the batch's statistics."""


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


ENGINES: dict[str, Engine] = {
    "hooks": hooks_stats,
    "functorch": functorch_stats,
    "reference": reference_stats,
}
