"""Synthetic statistic streams for the policy tests: explicit per-sample gradients per step.

A step's per-sample gradients are gᵢ = G_t + noise, with a mean G_t = G₀·decay^t that
shrinks over the run (so the tests grow the batch), spread over three "parameters" of
shapes (2, 3), (3,) and (4,). Each step's draw depends on (seed, step) only, so a policy
restored from a checkpoint can be fed exactly what the uninterrupted one saw.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from adabatch import BatchSizeScheduler
from adabatch.data import ResizableBatchSampler
from adabatch.stats import GradStats
from adabatch.stats.engines._dense import stats_from_per_sample

SHAPES = {"w": (2, 3), "b": (3,), "v": (4,)}
NUM_PARAMS = sum(math.prod(s) for s in SHAPES.values())


def per_sample_gradients(
    batch_size: int, step: int, *, seed: int = 0, decay: float = 0.9, noise: float = 1.0
) -> dict[str, torch.Tensor]:
    """{name: (b, *shape)} float64 per-sample gradients of step ``step``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    out = {}
    for name, shape in SHAPES.items():
        mean = torch.full(shape, decay**step, dtype=torch.float64)
        out[name] = mean + noise * torch.randn(batch_size, *shape, generator=g, dtype=torch.float64)
    return out


def stats_of(per_sample: dict[str, torch.Tensor]) -> GradStats:
    """GradStats (with P2, layer terms and coordinates) of explicit per-sample gradients.

    Vectorised (the engines' oracle `stats_from_per_sample` loops over samples, which is too
    slow for the thousands of samples a grown batch holds); `test_stream_stats_match_the_oracle`
    checks that both agree.
    """
    flat = {n: g.reshape(g.shape[0], -1) for n, g in per_sample.items()}
    b = next(iter(flat.values())).shape[0]
    mean = {n: f.mean(0) for n, f in flat.items()}
    p_layer = {n: f @ mean[n] for n, f in flat.items()}  # ⟨gᵢ^(l), ḡ^(l)⟩
    p = sum(p_layer.values())
    return GradStats.from_batch(
        b,
        {n: g.sum(0) for n, g in per_sample.items()},
        sum((f * f).sum() for f in flat.values()),
        sum_sq_inner=(p * p).sum(),
        coord_sq_sum={n: (g * g).sum(0) for n, g in per_sample.items()},
        layer_sq_inner={n: (q * q).sum() for n, q in p_layer.items()},
    )


def stats_at(batch_size: int, step: int, **kwargs) -> GradStats:
    """GradStats (with P2, layer terms and coordinates) of step ``step``'s batch."""
    return stats_of(per_sample_gradients(batch_size, step, **kwargs))


def oracle_stats_at(batch_size: int, step: int, **kwargs) -> GradStats:
    """The same through the engines' per-sample oracle."""
    return stats_from_per_sample(
        per_sample_gradients(batch_size, step, **kwargs),
        batch_size,
        inner_products=True,
        coordinates=True,
    )


def corrupted(stats: GradStats, value: float) -> GradStats:
    """The same statistics with S2 replaced by ``value`` (NaN or inf)."""
    return dataclasses.replace(stats, sum_sq_norms=torch.tensor(value, dtype=torch.float64))


def scheduler_for(policy, *, dataset_size: int | None = None):
    """A `BatchSizeScheduler` over a bare sampler: the policy's cadence with no model.

    The sampler's data set is the policy's N, or 10⁹ samples (effectively no cap) without one.
    """
    n = dataset_size or policy.dataset_size or 10**9
    return BatchSizeScheduler(policy, ResizableBatchSampler(n, policy.batch_size))


def drive(
    policy=None, *, epochs: int, steps_per_epoch: int, seed: int = 0, feed=None, scheduler=None
):
    """Run a policy's cadence over synthetic steps; return every decision taken.

    The policy runs in a `BatchSizeScheduler` (``scheduler``, or a fresh `scheduler_for`),
    which asks for statistics when the policy wants them, calls it at its decision points and
    resizes the sampler. ``feed(stats, step)`` may replace the statistics of a step (e.g. to
    corrupt them). A scheduler restored from a checkpoint continues at its own step and epoch.
    """
    sched = scheduler if scheduler is not None else scheduler_for(policy)
    decisions = []
    for _ in range(sched.epoch, epochs):
        for _ in range(steps_per_epoch):
            step = sched.step_count
            if sched.wants_stats:
                stats = stats_at(sched.batch_size, step, seed=seed)
                sched.observe(feed(stats, step) if feed else stats)
            d = sched.step()
            if d is not None:
                decisions.append(d)
        d = sched.step_epoch()
        if d is not None:
            decisions.append(d)
    return decisions
