"""``torch.distributed`` for adaptive batch sizes: launch, wrap, reduce, agree, checkpoint.

* `init_from_env` starts the process group from ``torchrun``'s environment (gloo on the CPU,
  NCCL on CUDA, a timeout on every collective) and returns this process's `DistributedEnv`;
  outside torchrun it describes a single process and starts nothing. `shutdown` ends it.
* `wrap_model` wraps the model for DDP or shards it with FSDP2 (``fully_shard``).
* `all_reduce_stats` sums a `GradStats` over the ranks (one collective per dtype), so every
  rank takes the same decision from the same numbers; `check_agreement` verifies it at run
  time; `all_reduce_int` agrees on an integer. Without a process group they are identities.
* `RankGradNorms` is a DDP communication hook giving the two-batch noise-scale estimate from
  the ranks' own gradients, with no per-sample work.

A training script run by ``torchrun --nproc_per_node=N train.py``::

    def train(env):
        model = wrap_model(build_model().to(env.device), "ddp", env)
        loader = AdaptiveLoader(train_set, 128, seed=0)  # the global batch; each rank its slice
        ...                                              # Trainer(model, ...).fit(epochs)

    env = init_from_env()
    train(env)
    shutdown()  # once the wrapped model is released
"""

from .agreement import check_agreement
from .collectives import all_reduce_int, all_reduce_stats, is_distributed, rank, world_size
from .launch import BACKENDS, DistributedEnv, init_from_env, launched_by_torchrun, shutdown
from .parallel import PARALLEL_MODES, fsdp_available, is_fsdp, unwrap, wrap_model
from .rank_norms import RankGradNorms

__all__ = [
    "BACKENDS",
    "PARALLEL_MODES",
    "DistributedEnv",
    "RankGradNorms",
    "all_reduce_int",
    "all_reduce_stats",
    "check_agreement",
    "fsdp_available",
    "init_from_env",
    "is_distributed",
    "is_fsdp",
    "launched_by_torchrun",
    "rank",
    "shutdown",
    "unwrap",
    "world_size",
    "wrap_model",
]
