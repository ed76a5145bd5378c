"""Which rows each batch looks up in embedding tables: the counts c_r of AdaBatch's rule.

`adabatch.sparse.embedding.EmbeddingAggregation` divides an embedding row's summed gradient by
c_r, the number of samples of the batch that look up row r (``count="samples"``) or the number
of its lookups (``count="occurrences"``). `LookupCounts` measures c_r with hooks, without any
change to the model. How the counts are collected, and what they assume:

* **The batch is dim 0** of the index tensor: an ``nn.Embedding`` input of shape ``(b, …)``
  holds sample i's tokens in ``input[i]``; an ``nn.EmbeddingBag`` sample is a bag (a row of a
  2-D input, or the span between two ``offsets``). A lookup broadcast over the batch (a ``(T,)``
  position tensor added to ``(b, T, D)`` activations) would count each position once instead of
  b times: repeat such indices to ``(b, T)`` or leave that table out.
* **Counts follow the gradient.** A forward hook registers a hook on each lookup's output; a
  lookup is counted when its output receives a gradient, and the counts of one backward are
  committed when that backward accumulates into ``weight.grad``. Forward passes without a
  backward (evaluation, under ``torch.no_grad()`` or not) are therefore never counted.
* **One backward = one set of samples.** A table looked up several times in one forward (two
  text fields, a tied input/output lookup) contributes the union per sample of those lookups
  (``"samples"``), which needs every lookup of that backward to have the same dim 0. Gradient
  accumulation (one backward per micro-batch) adds the micro-batches' counts and sample
  numbers, so with micro-batch losses weighted by their share of the batch the result equals
  the whole batch's. Counts accumulate until `EmbeddingAggregation.reset`, until
  `EmbeddingAggregation.apply` consumes them, or until a backward starts on a table whose
  ``.grad`` is ``None`` (``zero_grad(set_to_none=True)``: nothing left to describe).
* **padding_idx** rows receive no gradient; their lookups are not counted (c = 0, untouched).
  ``EmbeddingBag`` ``per_sample_weights`` are not looked at: a row in a bag counts whatever its
  weight.
* ``scale_grad_by_freq=True`` already divides by in-batch frequency and is refused, as is
  ``nn.EmbeddingBag(mode="max")`` (a present row need not receive gradient).
* A weight that also receives gradient outside the lookups (an output projection tied to the
  table) gets dense contributions from every sample; the per-row rule does not describe it.
* Under DistributedDataParallel ``p.grad`` is averaged over ranks but the counts are local;
  all-reduce them (they are additive) before ``apply``, or use one process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._validate import as_int

__all__ = ["COUNTS", "Call", "Count", "LookupCounts", "Table"]

Count = Literal["samples", "occurrences"]
#: How a row's count c_r is measured (see the module docstring).
COUNTS: tuple[str, ...] = get_args(Count)

_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclass(eq=False)
class Call:
    """One lookup: flat (sample, token) pairs and whether each pair is counted."""

    table: Table
    samples: int  # the call's number of samples (its dim 0, or its number of bags)
    sample_ids: Tensor  # int64, one per looked-up index
    tokens: Tensor  # int64, one per looked-up index
    keep: Tensor | None  # False at padding_idx; None: all counted
    received: bool = False  # already queued for this backward's commit


@dataclass(eq=False)
class Table:
    """One embedding weight (shared by every module that uses it) and its counts."""

    weight: nn.Parameter
    names: list[str]
    counts: Tensor | None = None  # int64 (V,), lazily on the weight's device
    samples: int = 0  # Σ over committed backwards of their number of samples
    samples_known: bool = True  # False: a backward's lookups disagreed on dim 0
    backwards: int = 0  # committed backwards with at least one lookup
    error: str | None = None  # a problem found while committing, raised by apply()
    received: list[Call] = field(default_factory=list)  # lookups of the running backward

    @property
    def num_embeddings(self) -> int:
        """V, the table's number of rows."""
        return int(self.weight.shape[0])


class LookupCounts:
    """The row counts of embedding tables, recorded through hooks (module docstring).

    Args:
        embeddings: an ``nn.Embedding`` or ``nn.EmbeddingBag``, an iterable of them, or a model
            whose trainable embedding submodules are all used (frozen ones are skipped).
        count: ``"samples"`` or ``"occurrences"`` (checked by the caller).

    Raises:
        ValueError: no (trainable) embedding; a table with ``scale_grad_by_freq=True``, an
            ``EmbeddingBag`` in ``mode="max"``, or a weight that does not require grad or is
            not a leaf.
        TypeError: an element of ``embeddings`` that is not an embedding module.
    """

    def __init__(self, embeddings: nn.Module | Iterable[nn.Module], count: str) -> None:
        self.count = count
        modules = _find_embeddings(embeddings)
        for name, module in modules:  # all checked before any hook is registered
            _check_module(name, module)
        self.tables: list[Table] = []
        self._table_of: dict[int, Table] = {}  # id(weight) -> table
        self._module_table: dict[int, Table] = {}  # id(module) -> table
        self._handles: list[RemovableHandle] = []
        for name, module in modules:
            weight = module.weight
            table = self._table_of.get(id(weight))
            if table is None:
                table = Table(weight=weight, names=[name])
                self._table_of[id(weight)] = table
                self.tables.append(table)
                self._handles.append(
                    weight.register_post_accumulate_grad_hook(
                        functools.partial(self._on_accumulated, table)
                    )
                )
            else:
                table.names.append(name)
            self._module_table[id(module)] = table
            self._handles.append(module.register_forward_hook(self._on_forward, with_kwargs=True))

    def _on_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not (isinstance(output, Tensor) and output.requires_grad):
            return  # no gradient can reach the weight through this lookup
        table = self._module_table[id(module)]
        call = _make_call(table, module, args, kwargs)
        output.register_hook(functools.partial(self._on_output_grad, call))

    def _on_output_grad(self, call: Call, grad: Tensor) -> None:
        table = call.table
        if table.weight.grad is None and not table.received:
            # A fresh accumulation (after zero_grad(set_to_none=True)): old counts describe
            # a gradient that no longer exists.
            _clear(table)
        if not call.received:
            call.received = True
            table.received.append(call)

    def _on_accumulated(self, table: Table, weight: Tensor) -> None:
        calls, table.received = table.received, []
        for call in calls:
            call.received = False
        if calls:
            self._commit(table, calls)

    def _commit(self, table: Table, calls: list[Call]) -> None:
        """Add one backward's lookups to the table's counts."""
        weight = table.weight
        if table.counts is None or table.counts.device != weight.device:
            table.counts = torch.zeros(table.num_embeddings, dtype=torch.long, device=weight.device)
        sizes = sorted({call.samples for call in calls})
        tokens = torch.cat([call.tokens for call in calls])
        keep = torch.cat(
            [
                torch.ones_like(call.tokens, dtype=torch.bool) if call.keep is None else call.keep
                for call in calls
            ]
        )
        if self.count == "occurrences":
            table.counts.index_add_(0, tokens, keep.long())
        else:
            if len(sizes) > 1:
                table.error = (
                    f"embedding {table.names[0]!r} was looked up {len(calls)} times in one "
                    f"backward with different batch sizes (dim 0: {sizes}), so count='samples' "
                    "cannot tell which lookups belong to the same sample; make dim 0 of every "
                    "lookup the sample (reshape or repeat the indices), call backward once per "
                    "batch, or use count='occurrences'"
                )
                table.backwards += 1  # recorded, so that apply() reports the problem
                return
            sample_ids = torch.cat([call.sample_ids for call in calls])
            # One key per (sample, token); pairs at padding_idx get -1 and are not counted.
            keys = torch.where(keep, sample_ids * table.num_embeddings + tokens, -1)
            keys = keys.sort().values
            first = torch.ones_like(keys, dtype=torch.bool)
            first[1:] = keys[1:] != keys[:-1]
            counted = first & (keys >= 0)
            table.counts.index_add_(0, keys.remainder(table.num_embeddings), counted.long())
        if len(sizes) == 1:
            table.samples += sizes[0]
        else:
            table.samples_known = False
        table.backwards += 1

    def recorded(self) -> list[Table]:
        """The tables with at least one committed backward since the last `reset`."""
        return [table for table in self.tables if table.backwards > 0]

    def reset(self) -> None:
        """Forget every recorded lookup (the counts restart from zero)."""
        for table in self.tables:
            _clear(table)
            for call in table.received:
                call.received = False
            table.received = []

    def counts(self, embedding: nn.Module | Tensor) -> Tensor:
        """A copy of the row counts c (int64, length V) recorded for ``embedding``."""
        table = self._lookup(embedding)
        if table.counts is None:
            return torch.zeros(table.num_embeddings, dtype=torch.long, device=table.weight.device)
        return table.counts.clone()

    def samples(self, embedding: nn.Module | Tensor) -> int | None:
        """Samples recorded for ``embedding`` since the last reset (None: ambiguous)."""
        table = self._lookup(embedding)
        return table.samples if table.samples_known else None

    def _lookup(self, embedding: nn.Module | Tensor) -> Table:
        table = (
            self._table_of.get(id(embedding))
            if isinstance(embedding, Tensor)
            else self._module_table.get(id(embedding))
        )
        if table is None:
            raise KeyError(
                f"{type(embedding).__name__} is not one of the aggregated embeddings {self.names()}"
            )
        return table

    def names(self) -> list[str]:
        """Every aggregated module's name, table by table."""
        return [name for table in self.tables for name in table.names]

    def state_dict(self) -> list[dict[str, Any]]:
        """Each table's counts and bookkeeping, in table order."""
        return [
            {
                "names": list(table.names),
                "num_embeddings": table.num_embeddings,
                "counts": None if table.counts is None else table.counts.detach().cpu(),
                "samples": table.samples,
                "samples_known": table.samples_known,
                "backwards": table.backwards,
                "error": table.error,
            }
            for table in self.tables
        ]

    def load_state_dict(self, saved: Sequence[Mapping[str, Any]]) -> None:
        """Restore what `state_dict` saved (after a `reset`).

        Raises:
            ValueError: the saved tables differ in number or size from these.
        """
        saved = list(saved)
        shapes = [entry["num_embeddings"] for entry in saved]
        mine = [table.num_embeddings for table in self.tables]
        if shapes != mine:
            raise ValueError(
                f"state_dict holds tables with {shapes} rows, this aggregation has {mine}; "
                "load it into an aggregation over the same embeddings, in the same order"
            )
        self.reset()
        for table, entry in zip(self.tables, saved, strict=True):
            counts = entry["counts"]
            table.counts = (
                None
                if counts is None
                else torch.as_tensor(counts, dtype=torch.long).to(table.weight.device).clone()
            )
            table.samples = as_int(entry["samples"], "samples", minimum=0)
            table.samples_known = bool(entry["samples_known"])
            table.backwards = as_int(entry["backwards"], "backwards", minimum=0)
            table.error = entry["error"]

    def remove(self) -> None:
        """Remove every hook and forget the counts; nothing is recorded afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.reset()


def _find_embeddings(embeddings: nn.Module | Iterable[nn.Module]) -> list[tuple[str, nn.Module]]:
    """(name, module) for every embedding to aggregate, without duplicates."""
    if isinstance(embeddings, _EMBEDDING_TYPES):
        return [(type(embeddings).__name__, embeddings)]
    if isinstance(embeddings, nn.Module):
        found = [(n or "<root>", m) for n, m in embeddings.named_modules()]
        found = [(n, m) for n, m in found if isinstance(m, _EMBEDDING_TYPES)]
        if not found:
            raise ValueError(
                f"{type(embeddings).__name__} has no nn.Embedding or nn.EmbeddingBag "
                "submodule; pass the embedding modules themselves, or a model containing them"
            )
        trainable = [(n, m) for n, m in found if m.weight.requires_grad]
        if not trainable:
            raise ValueError(
                f"every embedding of {type(embeddings).__name__} is frozen "
                f"({[n for n, _ in found]} have requires_grad=False): nothing to aggregate"
            )
        return trainable
    if isinstance(embeddings, Tensor) or not isinstance(embeddings, Iterable):
        raise TypeError(
            "embeddings must be an nn.Embedding / nn.EmbeddingBag, an iterable of them, or a "
            f"model (nn.Module), got {type(embeddings).__name__}"
        )
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    for k, module in enumerate(embeddings):
        if not isinstance(module, _EMBEDDING_TYPES):
            raise TypeError(
                f"embeddings[{k}] must be an nn.Embedding or nn.EmbeddingBag, got "
                f"{type(module).__name__}; pass a model to find its embeddings"
            )
        if id(module) not in seen:
            seen.add(id(module))
            out.append((f"embeddings[{k}]", module))
    if not out:
        raise ValueError("embeddings is empty: pass at least one nn.Embedding / EmbeddingBag")
    return out


def _check_module(name: str, module: nn.Module) -> None:
    assert isinstance(module, _EMBEDDING_TYPES)
    kind = type(module).__name__
    if module.scale_grad_by_freq:
        raise ValueError(
            f"{name} ({kind}) has scale_grad_by_freq=True, which already divides each row's "
            "gradient by the token's frequency in the batch; AdaBatch would divide twice. "
            "Construct it with scale_grad_by_freq=False"
        )
    if isinstance(module, nn.EmbeddingBag) and module.mode == "max":
        raise ValueError(
            f"{name} (EmbeddingBag) has mode='max', which sends each bag's gradient to one row "
            "per dimension, so a row present in a bag need not receive gradient; use mode="
            "'sum' or 'mean'"
        )
    weight = module.weight
    if not weight.requires_grad:
        raise ValueError(
            f"{name} ({kind}) has a frozen weight (requires_grad=False): nothing to aggregate; "
            "leave it out or unfreeze it first"
        )
    if not weight.is_leaf:
        raise ValueError(
            f"{name} ({kind}) has a weight that is not a leaf tensor (a parametrization?); "
            "AdaBatch rescales the gradient accumulated into a leaf's .grad"
        )


def _make_call(
    table: Table, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Call:
    """The (sample, token) pairs of one lookup; the batch is dim 0 (or the bags)."""
    indices = args[0] if args else kwargs.get("input")
    assert isinstance(indices, Tensor)  # the forward already ran, so the input was valid
    name = table.names[0]
    if indices.dim() == 0:
        raise ValueError(
            f"{name} was called with a 0-d index tensor ({indices.item()}); AdaBatch takes the "
            "batch from dim 0 of the indices, so pass shape (b, ...), e.g. indices.view(1)"
        )
    tokens = indices.reshape(-1).long()
    positions = torch.arange(tokens.numel(), device=tokens.device)
    if isinstance(module, nn.EmbeddingBag) and indices.dim() == 1:
        offsets = args[1] if len(args) > 1 else kwargs.get("offsets")
        assert isinstance(offsets, Tensor)
        samples = offsets.numel() - 1 if module.include_last_offset else offsets.numel()
        bounds = offsets[:samples].long()
        sample_ids = torch.bucketize(positions, bounds, right=True) - 1
    else:
        samples = int(indices.shape[0])
        per_sample = math.prod(indices.shape[1:])
        sample_ids = positions // max(per_sample, 1)
    padding_idx = module.padding_idx
    keep = None if padding_idx is None else tokens != padding_idx
    return Call(table, samples, sample_ids, tokens, keep)


def _clear(table: Table) -> None:
    if table.counts is not None:
        table.counts.zero_()
    table.samples = 0
    table.samples_known = True
    table.backwards = 0
    table.error = None
