"""Driving a sampler through a resize plan (shared by the sampler and loader tests)."""

from __future__ import annotations

from adabatch.data import ResizableBatchSampler


def run(sampler: ResizableBatchSampler, plan: dict[int, int], epochs: int, step0: int = 0):
    """Batches of ``epochs`` epochs, applying ``plan`` (step → size) before each batch."""
    out, step = [], step0
    for _ in range(epochs):
        epoch_batches = []
        if step in plan:
            sampler.set_batch_size(plan[step])
        for batch in sampler:
            epoch_batches.append(batch)
            step += 1
            if step in plan:
                sampler.set_batch_size(plan[step])
        out.append(epoch_batches)
    return out
