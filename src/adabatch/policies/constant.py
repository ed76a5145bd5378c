"""The constant batch size: the SGD baselines of every paper (no statistics, no decisions)."""

from __future__ import annotations

from typing_extensions import Unpack

from .base import BatchSizePolicy, Bounds

__all__ = ["ConstantPolicy"]


class ConstantPolicy(BatchSizePolicy):
    """Keep ``batch_size`` for the whole run (bounds as in `BatchSizePolicy`).

    Example::

        policy = ConstantPolicy(128)          # SGD at 128, the DiveBatch papers' baseline
    """

    name = "constant"

    def __init__(
        self,
        batch_size: int,
        **bounds: Unpack[Bounds],
    ) -> None:
        super().__init__(batch_size, **bounds)
