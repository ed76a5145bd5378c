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

from ..summary import GradStats
from .functorch import functorch_stats
from .hooks import GradStatsTracker, hooks_stats
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


ENGINES: dict[str, Engine] = {
    "hooks": hooks_stats,
    "functorch": functorch_stats,
    "reference": reference_stats,
}
