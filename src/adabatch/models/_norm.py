"""The normalisation layer chosen by name, shared by the convolutional models."""

from __future__ import annotations

from torch import nn

NORMS = ("group", "batch", "none")


def make_norm(kind: str, channels: int, groups: int = 8) -> nn.Module:
    """GroupNorm (``groups`` groups, fewer if ``channels`` is smaller), BatchNorm2d or Identity."""
    if kind == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
