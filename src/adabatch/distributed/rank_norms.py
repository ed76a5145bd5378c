"""Per-rank gradient norms under DDP: the two-batch noise-scale estimate at no per-sample cost.

With W ranks, rank r's own gradient (before DDP's all-reduce) is a mean over its n_r samples,
and the all-reduced ``p.grad`` is the mean over the global batch of L samples: two batch
sizes, the two-batch estimator's inputs (McCandlish et al. 2018; k-diffusion's ``gns.py``
takes the same route). `RankGradNorms` is a DDP communication hook that records
‖local gradient‖² bucket by bucket and then runs DDP's own all-reduce unchanged::

    norms = RankGradNorms()
    ddp.register_comm_hook(norms, norms.hook)
    ...
    (loss_fn(ddp(x), y) * loader.loss_weight).backward()
    scheduler.observe(norms.estimates(ddp, loss_weight=loader.loss_weight, local_size=len(x)))

Rank r's buffer holds w_r·ḡ_r with w_r the loss weight (`AdaptiveLoader.loss_weight`, 1 for
equal shares), so ‖ḡ_r‖² = ‖buffer‖²/w_r². The ranks' average ‖ḡ_r‖² is the small norm at the
harmonic mean of the n_r (as in `parts_estimates`); ranks with an empty share sit out.
"""

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..stats.estimators import NoiseEstimate, two_batch_estimates

__all__ = ["RankGradNorms"]


class RankGradNorms:
    """A DDP communication hook that keeps Σ‖bucket‖² of this rank's local gradient.

    Args:
        process_group: the group DDP reduces over (default: the world).
    """

    def __init__(self, process_group: Any | None = None) -> None:
        self.process_group = process_group
        self._local: list[Tensor] = []

    # No `from __future__ import annotations` here: DDP checks that the annotation of
    # ``bucket`` is the class dist.GradBucket itself.
    def hook(self, state: "RankGradNorms", bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
        """Record the bucket's squared norm, then average it over the ranks as DDP does."""
        buffer = bucket.buffer()
        self._local.append(torch.linalg.vector_norm(buffer).double().square())  # no sync
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        buffer.div_(dist.get_world_size(group))
        future = dist.all_reduce(buffer, group=group, async_op=True).get_future()
        return future.then(lambda fut: fut.value()[0])

    def pop_local_sq_norm(self) -> Tensor:
        """‖this rank's gradient buffer‖² since the last call (0-dim float64), and reset."""
        terms, self._local = self._local, []
        if not terms:
            raise RuntimeError(
                "RankGradNorms saw no gradient bucket since the last call: register it with "
                "ddp.register_comm_hook(norms, norms.hook) and run a synchronising backward"
            )
        return torch.stack(terms).sum()

    def estimates(self, model: nn.Module, *, loss_weight: float, local_size: int) -> NoiseEstimate:
        """(tr Σ̂, ‖G‖²̂) from this step's local and global gradients (a collective call).

        Args:
            model: the DDP model (its ``p.grad`` now holds the global mean gradient).
            loss_weight: w_r, the factor this rank's mean loss was multiplied by.
            local_size: n_r, this rank's samples (0 for an empty share).
        """
        local_sq = self.pop_local_sq_norm()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        global_sq = torch.stack([torch.linalg.vector_norm(g).double().square() for g in grads])
        present = local_size > 0
        # Σ_r ‖ḡ_r‖², Σ_r 1/n_r, ranks with samples, global batch size L.
        sums = torch.tensor(
            [
                float(local_sq) / loss_weight**2 if present else 0.0,
                1.0 / local_size if present else 0.0,
                1.0 if present else 0.0,
                float(local_size),
            ],
            dtype=torch.float64,
        )
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        dist.all_reduce(sums, group=group)
        small_sum, inverse_sum, ranks, total = sums.tolist()
        return two_batch_estimates(
            small_sum / ranks, ranks / inverse_sum, float(global_sq.sum()), total
        )
