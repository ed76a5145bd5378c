"""Checkpoint state of a data-parallel model and its optimizer, the same file on every rank.

Under DDP every rank holds the whole model, so rank 0's ``state_dict`` is the checkpoint.
Under FSDP2 every rank holds a shard: the full state is gathered (a collective: every rank
calls these functions) into plain CPU tensors keyed like the unwrapped model's own
``state_dict``, and loaded back by each rank taking its shard of the full tensors. A checkpoint
written under FSDP2 therefore resumes under FSDP2 with any number of ranks, and its model
state loads into a plain module too; its optimizer state is keyed by parameter name (torch's
distributed-checkpoint convention) instead of by position, and is restored through the same
API, so it resumes under FSDP2 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .collectives import is_distributed
from .parallel import is_fsdp, unwrap

__all__ = [
    "gather_objects",
    "load_model_state",
    "load_optimizer_state",
    "model_state",
    "optimizer_state",
]


def _full_options(**extra: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def model_state(model: nn.Module) -> dict[str, Any]:
    """The whole model's ``state_dict`` (gathered under FSDP2: call on every rank)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options(cpu_offload=True))
    return unwrap(model).state_dict()


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's ``state_dict`` (gathered under FSDP2: call on every rank)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
        return {"fsdp_full": True, **state}
    return optimizer.state_dict()


def load_model_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Load a `model_state` (each FSDP2 rank keeps its shard of the full tensors)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, dict(state), options=_full_options())
        return
    unwrap(model).load_state_dict(state)


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
) -> None:
    """Load an `optimizer_state` written under the same kind of parallelism."""
    state = dict(state)
    gathered = bool(state.pop("fsdp_full", False))
    if gathered != is_fsdp(model):
        raise ValueError(
            "the checkpoint's optimizer state was written "
            + ("under FSDP2 (keyed by parameter name)" if gathered else "without FSDP2")
            + " and this run "
            + ("shards the model with FSDP2" if is_fsdp(model) else "does not shard the model")
            + ": resume with the same train.parallel as the run that wrote it"
        )
    if gathered:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=_full_options())
        return
    optimizer.load_state_dict(state)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` without a group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
