"""The constant batch size: the SGD baselines of every paper (no statistics, no decisions)."""

from __future__ import annotations

import dataclasses

from .base import BatchSizePolicy

__all__ = ["ConstantPolicy"]


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class ConstantPolicy(BatchSizePolicy):
    """Keep ``batch_size`` for the whole run (bounds as in `BatchSizePolicy`).

    Example::

        policy = ConstantPolicy(128)          # SGD at 128, the DiveBatch papers' baseline
    """

    name = "constant"
