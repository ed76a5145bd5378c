"""Wrapping a model for data-parallel training: DDP or FSDP2, and finding it again inside.

* ``"ddp"``: `torch.nn.parallel.DistributedDataParallel` — every rank holds the whole model;
  the gradients are averaged by an all-reduce during the backward pass.
* ``"fsdp"``: FSDP2's ``fully_shard`` — every rank holds a shard of each parameter; a block's
  parameters are gathered just before its forward and backward, and its gradients are
  reduce-scattered back into shards. Each child module with parameters becomes one block
  (containers such as ``nn.ModuleList``, which are never called, are entered instead), then
  the root; attention and recurrent layers stay in their parent's block.

Both average the ranks' gradients; the trainer weighs each rank's loss so that the average is
the global batch's mean (`adabatch.data.AdaptiveLoader.loss_weight`). The per-sample
statistics (`adabatch.stats.GradStatsTracker`) see the gathered parameters in every layer's
forward under either, so each rank computes exact terms for its own samples and
`adabatch.distributed.all_reduce_stats` sums them over all ranks — also under HSDP, where every
rank of both the replicate and the shard dimension holds different samples.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._fsdp import fsdp_available, is_fsdp
from .._validate import check_choice
from .launch import DistributedEnv

__all__ = ["PARALLEL_MODES", "fsdp_available", "is_fsdp", "unwrap", "wrap_model"]

#: How `wrap_model` parallelises: replicate (DDP) or shard (FSDP2).
PARALLEL_MODES: tuple[str, ...] = ("ddp", "fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or similar) wrapper; FSDP2 shards in place."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


# Layers whose per-sample statistics recompute their forward (attention, RNNs): FSDP2 gathers
# a block's parameters again for the backward from hooks on the block's outputs, and the
# recomputed output replaces the module's own, so such a layer must not be a block of its own.
_RECOMPUTED: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.RNN, nn.GRU, nn.LSTM)


def _blocks(module: nn.Module) -> list[nn.Module]:
    """The modules that become FSDP2 blocks: called children with parameters."""
    out: list[nn.Module] = []
    for child in module.children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, _RECOMPUTED):
            continue  # kept in its parent's block (see `_RECOMPUTED`)
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            out += _blocks(child)  # never called itself: its members gather their parameters
        else:
            out.append(child)
    return out


def wrap_model(model: nn.Module, parallel: str, env: DistributedEnv, **options: Any) -> nn.Module:
    """``model`` ready for data-parallel training on ``env``; itself for a single process.

    Args:
        model: the model, already on ``env.device``.
        parallel: "ddp" or "fsdp" (see the module docstring).
        env: from `adabatch.distributed.init_from_env`.
        options: passed to DistributedDataParallel or to every ``fully_shard`` call.

    Raises:
        ValueError: an unknown mode, or "fsdp" on a torch without FSDP2.
    """
    check_choice("parallel", parallel, PARALLEL_MODES)
    if not env.distributed:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, **options)
    if not fsdp_available():
        import torch

        raise ValueError(
            f"parallel='fsdp' needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6); "
            f"this is torch {torch.__version__}: upgrade torch or use parallel='ddp'"
        )
    from torch.distributed.fsdp import fully_shard

    for block in _blocks(model):
        fully_shard(block, **options)
    fully_shard(model, **options)
    return model
