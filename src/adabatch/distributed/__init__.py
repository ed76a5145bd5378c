"""``torch.distributed`` for adaptive batch sizes: statistics summed over ranks, rank norms.

* `all_reduce_stats` sums a `GradStats` over the ranks (one collective per dtype), so every
  rank takes the same decision from the same numbers; `all_reduce_int` agrees on an integer
  (the physical batch that fits everywhere). Without a process group both return their input.
* `RankGradNorms` is a DDP communication hook giving the two-batch noise-scale estimate from
  the ranks' own gradients, with no per-sample work.
"""

from .collectives import all_reduce_int, all_reduce_stats, is_distributed, rank, world_size
from .rank_norms import RankGradNorms

__all__ = [
    "RankGradNorms",
    "all_reduce_int",
    "all_reduce_stats",
    "is_distributed",
    "rank",
    "world_size",
]
