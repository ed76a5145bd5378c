"""The registry of batch-size policies: name → class, and building one from a name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..options import options_of
from .adaptive_sampling import (
    AugmentedInnerProductTest,
    CoordinateNormTest,
    InnerProductTest,
    NormTest,
    OrthogonalityTest,
)
from .base import BatchSizePolicy
from .constant import ConstantPolicy
from .critical_warmup import CriticalBatchWarmup
from .divebatch import DiveBatchPolicy
from .noise_scale import NoiseScalePolicy
from .sample_schedule import SampleSchedulePolicy
from .schedule import SchedulePolicy
from .seesaw import SeesawPolicy

__all__ = ["POLICIES", "make_policy", "policy_from_state_dict", "policy_parameters"]

POLICIES: Mapping[str, type[BatchSizePolicy]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            ConstantPolicy,
            SchedulePolicy,
            DiveBatchPolicy,
            NormTest,
            InnerProductTest,
            OrthogonalityTest,
            AugmentedInnerProductTest,
            CoordinateNormTest,
            NoiseScalePolicy,
            SampleSchedulePolicy,
            CriticalBatchWarmup,
            SeesawPolicy,
        )
    }
)


def _lookup(name: str) -> type[BatchSizePolicy]:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
    return POLICIES[name]


def policy_parameters(name: str) -> dict[str, Any]:
    """The options of policy ``name`` (its dataclass fields) with their defaults.

    A required option (no default) maps to ``...``.
    """
    return {k: o.default for k, o in options_of(_lookup(name)).items()}


def make_policy(name: str, /, **config: Any) -> BatchSizePolicy:
    """Build policy ``name`` from keyword arguments, with errors that list what is valid.

    Example:
        >>> make_policy("norm-test", batch_size=32, eta=0.1, max_batch_size=4096).batch_size
        32
    """
    cls = _lookup(name)
    valid = policy_parameters(name)
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for policy {name!r}; valid options: {', '.join(valid)}"
        )
    missing = sorted(k for k, v in valid.items() if v is ... and k not in config)
    if missing:
        raise ValueError(f"policy {name!r} needs {missing}")
    return cls(**config)


def policy_from_state_dict(state: Mapping[str, Any]) -> BatchSizePolicy:
    """Rebuild a policy from its `state_dict` (its name and configuration are in it)."""
    return make_policy(state["name"], **state["config"])
