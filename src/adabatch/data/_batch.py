"""Walking a batch's structure: a tensor, or nested tuples, lists and mappings of tensors.

A list of plain values (no tensors or containers inside) is what the default collate makes
of a per-sample field such as a string: it holds one value per sample and is cut with the
tensors. Everything else that is not a tensor or a container passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .rows import gather_csr_rows

__all__ = ["map_tensors", "slice_rows", "tensors_in"]


def _is_plain_list(batch: Any) -> bool:
    return isinstance(batch, list) and not any(
        isinstance(b, (Tensor, tuple, list, Mapping)) for b in batch
    )


def _map(batch: Any, on_tensor: Callable[[Tensor], Any], on_values: Callable[[list], Any]) -> Any:
    if isinstance(batch, Tensor):
        return on_tensor(batch)
    if _is_plain_list(batch):
        return on_values(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_map(b, on_tensor, on_values) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map(b, on_tensor, on_values) for b in batch)
    if isinstance(batch, Mapping):
        items = {k: _map(v, on_tensor, on_values) for k, v in batch.items()}
        try:
            return type(batch)(items)  # keep OrderedDict and friends
        except TypeError:
            return items
    return batch


def map_tensors(batch: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``batch`` with ``fn`` applied to every tensor (device moves, pinning)."""
    return _map(batch, fn, lambda values: values)


def tensors_in(batch: Any) -> list[Tensor]:
    """Every tensor in ``batch``, depth first."""
    found: list[Tensor] = []
    _map(batch, found.append, lambda values: values)
    return found


def _rows(t: Tensor, start: int, stop: int) -> Tensor:
    if t.dim() == 0:
        return t
    if t.layout == torch.sparse_csr:
        return gather_csr_rows(t, torch.arange(start, stop, device=t.device))
    if t.layout == torch.sparse_coo:
        return t.index_select(0, torch.arange(start, stop, device=t.device))
    return t[start:stop]  # a view: no copy


def slice_rows(batch: Any, start: int, stop: int, n: int) -> Any:
    """Samples ``[start, stop)`` of a batch of ``n``: tensor rows and per-sample lists."""
    return _map(
        batch,
        lambda t: _rows(t, start, stop),
        lambda values: values[start:stop] if len(values) == n else values,
    )
