"""Shared by the trainer-integration tests: a data set that returns its own index, models."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from adabatch.stats import compute_stats


class Indexed(Dataset):
    """n samples (x ∈ R⁸, a class in {0, 1, 2}) that also return their index."""

    def __init__(self, n: int = 160, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], i


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def by_epoch(batches: list[tuple[int, list[int]]]) -> dict[int, list[list[int]]]:
    """(epoch, indices) pairs grouped by epoch, in order."""
    out: dict[int, list[list[int]]] = {}
    for epoch, idx in batches:
        out.setdefault(epoch, []).append(idx)
    return out


def flat_once(epoch_batches: list[list[int]], n: int) -> bool:
    """Whether the batches of one epoch cover 0..n-1 exactly once."""
    flat = [i for b in epoch_batches for i in b]
    return sorted(flat) == list(range(n))


def own_loop_value(policy, model: nn.Module, data: Indexed, indices: list[int]) -> float:
    """The policy's statistic on one batch, from adabatch's reference engine (our own loop)."""
    x, y = data.x[indices], data.y[indices]
    stats = compute_stats(
        model, nn.functional.cross_entropy, x, y, engine="reference",
        **policy.stats_request.tracker_options(),
    )  # fmt: skip
    _, decision = policy.decide(policy.init(), stats, batch_size=len(indices), step=0, epoch=0)
    return decision.value
