"""A batch size that grows during training, with the data side of adabatch.

    python examples/resizing_loader.py

Trains an MLP on a synthetic 10-class problem. Every epoch the batch doubles (a stand-in for
an adaptive policy); batches above 64 samples run as micro-batches with the exact gradient of
the whole batch, and the tracker reports the statistics of the logical batch. Prints, per
epoch, the batch size, the number of steps, the samples seen and the gradient diversity.
"""

from __future__ import annotations

import torch
from torch import nn

from adabatch.data import AdaptiveLoader, MicroBatcher
from adabatch.datasets import ArrayDataset
from adabatch.stats import GradStatsTracker, gradient_diversity


def make_data(n: int = 2048, seed: int = 0) -> ArrayDataset:
    """Inputs with a linear 10-class structure."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    return ArrayDataset(x, (x @ torch.randn(32, 10, generator=g)).argmax(1), num_classes=10)


def main(epochs: int = 4, batch_size: int = 32) -> list[dict[str, float]]:
    """Train for ``epochs`` epochs; return one row per epoch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    loader = AdaptiveLoader(make_data(), batch_size, seed=0)
    tracker = GradStatsTracker(model, loss_reduction="mean")
    micro = MicroBatcher(model, max_physical_batch_size=64, tracker=tracker)

    log = []
    for epoch in range(epochs):
        steps, seen, diversity = 0, 0, 0.0
        for inputs, targets in loader:
            optimizer.zero_grad()
            micro.backward(lambda b: loss_fn(model(b[0]), b[1]), (inputs, targets))
            stats = tracker.pop()  # the logical batch, however many chunks it took
            optimizer.step()
            steps, seen = steps + 1, seen + stats.num_samples
            diversity += gradient_diversity(stats)
        row = {
            "epoch": epoch,
            "batch": loader.batch_size,
            "steps": steps,
            "samples": seen,
            "diversity": diversity / steps,
        }
        log.append(row)
        print("  ".join(f"{k} {v:.4g}" for k, v in row.items()))
        loader.set_batch_size(2 * loader.batch_size)  # from the next batch on
    tracker.remove()
    return log


if __name__ == "__main__":
    main()
