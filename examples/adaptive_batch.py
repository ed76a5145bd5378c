"""An adaptive batch size in a plain loop: the README's BatchSizeScheduler snippet.

    python examples/adaptive_batch.py

Trains a small MLP on a synthetic 10-class problem with the norm test (AdAdaGrad's default
test) growing the batch, SGD with the square-root LR rule, and prints one line per epoch:
the batch size, the steps taken, the LR and the last test statistic.
"""

from __future__ import annotations

import torch
from torch import nn

from adabatch import AdaptiveLoader, BatchSizeScheduler, GradStatsTracker, make_policy
from adabatch.datasets import ArrayDataset


def make_data(n: int = 4096, seed: int = 0) -> ArrayDataset:
    """Inputs with a linear 10-class structure."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    return ArrayDataset(x, (x @ torch.randn(32, 10, generator=g)).argmax(1), num_classes=10)


def main(epochs: int = 4) -> list[dict[str, float]]:
    """Train for ``epochs`` epochs; return one row per epoch."""
    torch.manual_seed(0)
    dataset = make_data()
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()

    # --- the README snippet -------------------------------------------------------------
    policy = make_policy("norm-test", batch_size=16, eta=0.5, max_batch_size=1024)
    loader = AdaptiveLoader(dataset, policy.batch_size, seed=0)
    scheduler = BatchSizeScheduler(policy, loader, optimizer, lr_rule="sqrt")
    tracker = GradStatsTracker(model, **scheduler.tracker_options)
    log = []
    for epoch in range(epochs):
        steps = scheduler.step_count
        for inputs, targets in loader:
            optimizer.zero_grad()
            with scheduler.measure(tracker):  # statistics only on the steps the policy tests
                loss_fn(model(inputs), targets).backward()
            optimizer.step()
            scheduler.step()  # may resize the loader (next batch) and rescale the LR
        scheduler.step_epoch()
        # --------------------------------------------------------------------------------
        last = scheduler.last_decision
        row = {
            "epoch": epoch,
            "batch": scheduler.batch_size,
            "steps": scheduler.step_count - steps,
            "lr": optimizer.param_groups[0]["lr"],
            "T": last.value if last is not None else float("nan"),
        }
        log.append(row)
        print("  ".join(f"{k} {v:.4g}" for k, v in row.items()))
    tracker.remove()
    return log


if __name__ == "__main__":
    main()
