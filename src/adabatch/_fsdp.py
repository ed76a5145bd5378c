"""Whether FSDP2 exists in this torch, and whether a module is sharded by it (no other imports).

A leaf module, so that both the statistics engine and `adabatch.distributed` can ask without
importing each other.
"""

from __future__ import annotations

from torch import nn

__all__ = ["fsdp_available", "is_fsdp"]


def fsdp_available() -> bool:
    """Whether this torch has FSDP2's ``fully_shard`` (torch 2.6 and later)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def is_fsdp(module: nn.Module) -> bool:
    """Whether FSDP2's ``fully_shard`` made ``module`` a block of its own."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6: no FSDP2
        return False
    return isinstance(module, FSDPModule)
