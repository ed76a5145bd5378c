"""Federated averaging with a client batch that evolves over rounds, simulated in one process.

Setting (McMahan et al. 2017, FedAvg): C clients hold non-identical shards of a data set (a
Dirichlet(α) split of the labels, `dirichlet_split`); each round, S of them (`participants`)
start from the global parameters θ, take K local SGD steps on their own data, and θ becomes
the mean of their parameters weighted by their shard sizes.

The client batch. An, Shen, Luo, Hu & Tao (IEEE TPAMI 2025, "Adaptive batch size time evolving
stochastic gradient descent for federated learning", FedATEVR) set each client's batch from
"historical gradient information", global and local, to damp the swings client heterogeneity
causes; only the abstract is public and its formula cannot be recovered (FedATEVR is also a
variance-reduced method, which this is not). `TimeEvolvingBatch` is therefore **adabatch's
variant**, built from what the abstract states and named as such:

    b_{i,t+1} = clip(max(b_{i,t}, ⌈V̂_i / (η² Ĝ)⌉), b_min, b_max)

where V_i is client i's per-sample gradient variance (tr Σ, local information) and G the
squared norm of the mean gradient over all participating clients (global information), both
measured on each client's first local batch of the round, at θ; the hats are exponential
moving averages over the rounds a client took part in (historical information, weight
``smoothing`` on the past). It is the norm test with a client's own noise against the
federation's signal: a client whose gradients are noisy relative to where the federation is
heading gets a larger batch, and sizes never shrink.

A round averages the parameters and the floating-point buffers (BatchNorm's running
statistics) alike.

Simulation: **sequential and deterministic**. Clients run one after the other in this
process (no process group), each from θ with a fresh optimizer, on data drawn by a generator
seeded by (seed, round, client); a run is a function of its configuration and seed, so
sequential and any parallel schedule of the same clients give identical results.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from .._validate import as_int, check_choice, check_positive
from ..datasets import ArrayDataset
from ..stats import GradStatsTracker
from ..stats.estimators import gradient_variance, mean_sq_norm
from ..training.evaluate import evaluate

__all__ = [
    "FederatedConfig",
    "TimeEvolvingBatch",
    "dirichlet_split",
    "participants",
    "run_federated",
]


def dirichlet_split(
    labels: Tensor, num_clients: int, alpha: float, seed: int, *, min_size: int = 1
) -> list[Tensor]:
    """Indices of each client's shard: class c's samples split by proportions ~ Dirichlet(α).

    Small α gives each client few classes; large α approaches an i.i.d. split. Every index
    goes to exactly one client. A draw that leaves a client with fewer than ``min_size``
    samples is redrawn (up to 100 times).

    Raises:
        ValueError: bad ``num_clients``/``alpha``, or no draw gives every client
            ``min_size`` samples.
    """
    num_clients = as_int(num_clients, "num_clients", minimum=1)
    alpha = check_positive("alpha", alpha)
    generator = torch.Generator().manual_seed(seed)
    labels = labels.long()
    concentration = torch.full((num_clients,), float(alpha), dtype=torch.float64)
    for _ in range(100):
        shards: list[list[Tensor]] = [[] for _ in range(num_clients)]
        for c in torch.unique(labels).tolist():
            members = torch.nonzero(labels == c).flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            gamma = torch._standard_gamma(concentration, generator=generator)
            cuts = (torch.cumsum(gamma / gamma.sum(), 0) * len(members)).round().long()
            bounds = zip([0, *cuts[:-1].tolist()], cuts.tolist(), strict=True)
            for client, (lo, hi) in enumerate(bounds):
                shards[client].append(members[lo:hi])
        split = [torch.cat(s).sort().values for s in shards]
        if min(len(s) for s in split) >= min_size:
            return split
    raise ValueError(
        f"no Dirichlet(α={alpha}) split gave each of {num_clients} clients {min_size} samples; "
        "raise alpha or lower num_clients"
    )


def participants(num_clients: int, per_round: int, round_index: int, seed: int) -> list[int]:
    """The ``per_round`` clients of round ``round_index`` (sorted), a function of its args."""
    per_round = as_int(per_round, "per_round", minimum=1)
    if per_round > num_clients:
        raise ValueError(f"per_round={per_round} exceeds the {num_clients} clients")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + round_index)
    return sorted(torch.randperm(num_clients, generator=generator)[:per_round].tolist())


@dataclasses.dataclass(frozen=True)
class TimeEvolvingBatch:
    """adabatch's time-evolving client batch (see the module docstring for the formula).

    Attributes:
        eta: the norm test's η (larger: smaller batches).
        smoothing: the moving averages' weight on the past, in [0, 1).
        min_batch_size, max_batch_size: the clip.
    """

    eta: float = 1.0
    smoothing: float = 0.5
    min_batch_size: int = 1
    max_batch_size: int = 1024

    def __post_init__(self) -> None:
        check_positive("eta", self.eta)
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        lo = as_int(self.min_batch_size, "min_batch_size", minimum=1)
        as_int(self.max_batch_size, "max_batch_size", minimum=lo)

    def update(
        self,
        history: dict[int, tuple[float, float]],
        sizes: dict[int, int],
        variances: dict[int, float],
        global_sq_norm: float,
    ) -> tuple[dict[int, tuple[float, float]], dict[int, int]]:
        """The new moving averages (client → (V̂, Ĝ)) and sizes of this round's clients."""
        history, sizes = dict(history), dict(sizes)
        for client, variance in variances.items():
            if client in history:
                v_old, g_old = history[client]
                v = self.smoothing * v_old + (1 - self.smoothing) * variance
                g = self.smoothing * g_old + (1 - self.smoothing) * global_sq_norm
            else:
                v, g = variance, global_sq_norm
            history[client] = (v, g)
            wanted = math.ceil(v / (self.eta**2 * g)) if g > 0 and math.isfinite(v) else 0
            size = max(sizes[client], wanted)
            sizes[client] = min(max(size, self.min_batch_size), self.max_batch_size)
        return history, sizes


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    """One federated run.

    Attributes:
        clients: C, the clients.
        per_round: S, the clients taking part in a round.
        local_steps: K, each participant's local SGD steps per round.
        rounds: communication rounds.
        batch_size: the clients' initial (or constant) batch.
        lr: the clients' SGD learning rate.
        alpha: the Dirichlet concentration of the split.
        rule: "constant" or "time-evolving" (`TimeEvolvingBatch`).
        evolving: the rule's settings.
        eval_every: evaluate the global model every this many rounds (and at the last).
        seed: seeds the split, the participants, the clients' data order and the model.
    """

    clients: int = 10
    per_round: int = 5
    local_steps: int = 10
    rounds: int = 50
    batch_size: int = 16
    lr: float = 0.05
    alpha: float = 0.5
    rule: str = "constant"
    evolving: TimeEvolvingBatch = TimeEvolvingBatch()
    eval_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clients", "per_round", "local_steps", "rounds", "batch_size", "eval_every"):
            as_int(getattr(self, name), name, minimum=1)
        check_positive("lr", self.lr)
        check_choice("rule", self.rule, ("constant", "time-evolving"))


def _client_batches(
    shard: Tensor, size: int, steps: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """``steps`` batches of ``size`` from ``shard``, reshuffled each time it is used up."""
    order = shard[torch.randperm(len(shard), generator=generator)]
    cursor = 0
    for _ in range(steps):
        if cursor + size > len(order):
            if size >= len(order):  # a batch as large as the shard: the whole shard
                yield order
                continue
            order = shard[torch.randperm(len(shard), generator=generator)]
            cursor = 0
        yield order[cursor : cursor + size]
        cursor += size


def run_federated(
    config: FederatedConfig,
    train: ArrayDataset,
    test: ArrayDataset,
    make_model: Callable[[], nn.Module],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy,
) -> list[dict[str, Any]]:
    """Simulate the federated run; one record per round (and the test accuracy when due).

    Record keys: round, samples (all clients' local samples so far), mean_batch (the mean
    batch of the round's participants), time (training seconds, evaluation excluded), and
    test_loss / test_accuracy at evaluation rounds (round 0: before training).
    """
    torch.manual_seed(config.seed)
    model = make_model()
    shards = dirichlet_split(train.targets, config.clients, config.alpha, config.seed)
    sizes = {c: config.batch_size for c in range(config.clients)}
    history: dict[int, tuple[float, float]] = {}
    weights = torch.tensor([float(len(s)) for s in shards], dtype=torch.float64)
    x_all, y_all = train.tensors
    tracker = GradStatsTracker(model) if config.rule == "time-evolving" else None
    records: list[dict[str, Any]] = [
        {"round": 0, "samples": 0, "mean_batch": float(config.batch_size), "time": 0.0,
         **evaluate(model, test, loss_fn)}
    ]  # fmt: skip
    samples, clock = 0, 0.0
    try:
        for t in range(1, config.rounds + 1):
            start = time.perf_counter()
            # what a round averages: the parameters and the floating-point buffers
            state = [p for p in model.parameters()] + [
                b for b in model.buffers() if b.is_floating_point()
            ]
            theta = [tensor.detach().clone() for tensor in state]
            chosen = participants(config.clients, config.per_round, t, config.seed)
            total = [torch.zeros_like(p, dtype=torch.float64) for p in theta]
            first_stats: dict[int, Any] = {}
            for client in chosen:
                with torch.no_grad():
                    for tensor, value in zip(state, theta, strict=True):
                        tensor.copy_(value)
                optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
                generator = torch.Generator().manual_seed(
                    (config.seed * 7919 + t) * 104_729 + client
                )
                batches = _client_batches(
                    shards[client], sizes[client], config.local_steps, generator
                )
                for k, index in enumerate(batches):
                    optimizer.zero_grad(set_to_none=True)
                    # The rule reads the first local batch only, at θ; the rest run unhooked.
                    measure = tracker is not None and k == 0
                    if measure:
                        tracker.reset()  # type: ignore[union-attr]  # passes of evaluate
                    pause = tracker.paused() if tracker and not measure else nullcontext()
                    with pause:
                        loss_fn(model(x_all[index]), y_all[index]).backward()
                    if measure:
                        first_stats[client] = tracker.pop()  # type: ignore[union-attr]
                    optimizer.step()
                    samples += len(index)
                w = float(weights[client])
                for acc, tensor in zip(total, state, strict=True):
                    acc += w * tensor.detach().double()
            norm = float(weights[chosen].sum())
            with torch.no_grad():
                for tensor, acc in zip(state, total, strict=True):
                    tensor.copy_((acc / norm).to(tensor.dtype))
            mean_batch = sum(sizes[c] for c in chosen) / len(chosen)
            if tracker is not None and first_stats:
                pooled = sum(first_stats.values())
                variances = {c: gradient_variance(s) for c, s in first_stats.items()}
                history, sizes = config.evolving.update(
                    history, sizes, variances, mean_sq_norm(pooled)
                )
            clock += time.perf_counter() - start
            record = {"round": t, "samples": samples, "mean_batch": mean_batch, "time": clock}
            if t % config.eval_every == 0 or t == config.rounds:
                record.update(evaluate(model, test, loss_fn))
            records.append(record)
    finally:
        if tracker is not None:
            tracker.remove()
    return records
