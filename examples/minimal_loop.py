"""Per-sample gradient statistics in a plain PyTorch training loop (the README's snippet).

    python examples/minimal_loop.py

Trains an MLP on a synthetic 10-class problem for a few steps and prints, per step, the batch
size and the statistics the adaptive-batch methods decide from.
"""

from __future__ import annotations

import torch
from torch import nn

from adabatch.stats import (
    GradStatsTracker,
    gradient_diversity,
    gradient_variance,
    inner_product_variance,
    noise_scale,
)


def batches(steps: int, batch_size: int, generator: torch.Generator):
    """A stand-in for a DataLoader: inputs with a linear 10-class structure."""
    teacher = torch.randn(784, 10, generator=generator)
    for _ in range(steps):
        x = torch.randn(batch_size, 784, generator=generator)
        yield x, (x @ teacher).argmax(1)


def main(steps: int = 5, batch_size: int = 64) -> list[dict[str, float]]:
    """Train for ``steps`` steps; return one row of statistics per step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    tracker = GradStatsTracker(model, loss_reduction="mean", inner_products=True)

    log = []
    for inputs, targets in batches(steps, batch_size, torch.Generator().manual_seed(0)):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()  # p.grad exactly as without the tracker
        stats = tracker.pop()  # this batch's GradStats
        optimizer.step()
        row = {
            "batch": stats.num_samples,
            "loss": loss.item(),
            "variance": gradient_variance(stats),
            "inner_product_variance": inner_product_variance(stats),
            "diversity": gradient_diversity(stats),
            "noise_scale": noise_scale(stats),  # inf while noise swamps the mean gradient
        }
        log.append(row)
        print("  ".join(f"{k} {v:.4g}" for k, v in row.items()))
    tracker.remove()
    return log


if __name__ == "__main__":
    main()
