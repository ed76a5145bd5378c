r"""AdaBatch aggregation for the embedding tables of deep networks.

Défossez & Bach (arXiv 1711.01761) aggregate a sparse mini-batch per coordinate: instead of
dividing the summed gradient by the batch size b, coordinate j is divided by cⱼ, the number of
samples of the batch in which it is non-zero (`adabatch.sparse.aggregate` for linear models).
An embedding table is the same situation one level up: sample i's gradient with respect to the
table W (V × D) is non-zero only in the rows of the tokens sample i looks up, so averaging over
b samples shrinks the update of a rare token's row b-fold. The rule applied here, row by row:

.. math::

    S_r = \sum_{i \in B} \nabla_{W_r} \ell_i, \qquad
    d_r = S_r / c_r \quad (c_r > 0), \qquad d_r = 0 = S_r \quad (c_r = 0),

then ``W ← W − γ·d`` with γ the **single-sample** step size (the optimizer's LR as given, not
scaled with b). A token seen by one sample takes a full single-sample step; a token every sample
uses (c_r = b: a position table, a frequent word) is averaged as usual, and every other
parameter of the network keeps its ordinary mean gradient. methods.md §2.3 leaves open whether
c_r counts samples or occurrences; both are offered:

* ``count="samples"`` (default, the paper's cⱼ): c_r = #{i : sample i looks up token r at least
  once} — a token repeated within a sample counts once;
* ``count="occurrences"``: c_r = the number of lookups of token r in the batch.

The rescaling is applied to ``p.grad`` after the backward pass. With a mean loss over b samples
``p.grad[r] = (1/b)·S_r``, so ``d_r = p.grad[r]·b/c_r`` (``loss_reduction="mean"``); with a
summed loss ``d_r = p.grad[r]/c_r`` (``loss_reduction="sum"``). Dense gradients and the sparse
gradients of ``nn.Embedding(sparse=True)`` are both handled.

How the counts are collected, and what they assume:

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
  all-reduce them (they are additive) before `apply`, or use one process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._validate import as_int, check_choice

__all__ = [
    "COUNTS",
    "REDUCTIONS",
    "AdaBatchEmbeddings",
    "Count",
    "EmbeddingAggregation",
    "LossReduction",
]

Count = Literal["samples", "occurrences"]
LossReduction = Literal["mean", "sum"]
#: How a row's count c_r is measured (see the module docstring).
COUNTS: tuple[str, ...] = ("samples", "occurrences")
#: How the loss reduces over the batch's samples, i.e. what ``p.grad`` holds before `apply`.
REDUCTIONS: tuple[str, ...] = ("mean", "sum")

_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclass(eq=False)
class _Call:
    """One lookup: flat (sample, token) pairs and whether each pair is counted."""

    table: _Table
    samples: int  # the call's number of samples (its dim 0, or its number of bags)
    sample_ids: Tensor  # int64, one per looked-up index
    tokens: Tensor  # int64, one per looked-up index
    keep: Tensor | None  # False at padding_idx; None: all counted
    received: bool = False  # already queued for this backward's commit


@dataclass(eq=False)
class _Table:
    """One embedding weight (shared by every module that uses it) and its counts."""

    weight: nn.Parameter
    names: list[str]
    counts: Tensor | None = None  # int64 (V,), lazily on the weight's device
    samples: int = 0  # Σ over committed backwards of their number of samples
    samples_known: bool = True  # False: a backward's lookups disagreed on dim 0
    backwards: int = 0  # committed backwards with at least one lookup
    error: str | None = None  # a problem found while committing, raised by apply()
    received: list[_Call] = field(default_factory=list)  # lookups of the running backward

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])


class EmbeddingAggregation:
    r"""Per-row AdaBatch aggregation of embedding gradients (module docstring for the rule).

    Records, through hooks, which rows each batch looks up, and `apply` turns the tables'
    ``p.grad`` from the loss's reduction into the AdaBatch aggregate
    ``d_r = (Σᵢ ∇_{W_r} ℓᵢ) / c_r``, i.e. ``p.grad[r] · b / c_r`` for a mean loss over b samples
    and ``p.grad[r] / c_r`` for a summed loss (rows with ``c_r = 0`` are zero and left
    untouched). Call it between ``loss.backward()`` and ``optimizer.step()``, or let
    `attach` / `AdaBatchEmbeddings` do it. Other parameters are not touched.

    Example::

        agg = EmbeddingAggregation(model)  # every trainable nn.Embedding / nn.EmbeddingBag
        opt = torch.optim.SGD(model.parameters(), lr=0.1)  # the single-sample step size
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()  # mean over the batch
            agg.apply()  # embedding rows: Σᵢ gᵢ / c_r
            opt.step()

    Args:
        embeddings: an ``nn.Embedding`` or ``nn.EmbeddingBag``, an iterable of them, or a model
            whose trainable embedding submodules are all used (frozen ones are skipped).
        loss_reduction: ``"mean"`` (``p.grad`` is the mean over the batch's samples) or
            ``"sum"`` (the sum).
        count: ``"samples"`` (c_r = samples containing token r) or ``"occurrences"`` (c_r =
            lookups of token r).

    Raises:
        ValueError: an unknown ``count`` or ``loss_reduction``; no (trainable) embedding; a
            table with ``scale_grad_by_freq=True``, an ``EmbeddingBag`` in ``mode="max"``, or
            a weight that does not require grad or is not a leaf.
        TypeError: an element of ``embeddings`` that is not an embedding module.
    """

    def __init__(
        self,
        embeddings: nn.Module | Iterable[nn.Module],
        *,
        loss_reduction: LossReduction = "mean",
        count: Count = "samples",
    ) -> None:
        self.count: str = check_choice("count", count, COUNTS)
        self.loss_reduction: str = check_choice("loss_reduction", loss_reduction, REDUCTIONS)
        modules = _find_embeddings(embeddings)
        for name, module in modules:  # all checked before any hook is registered
            _check_module(name, module)
        self._tables: list[_Table] = []
        self._table_of: dict[int, _Table] = {}  # id(weight) -> table
        self._module_table: dict[int, _Table] = {}  # id(module) -> table
        self._handles: list[RemovableHandle] = []
        for name, module in modules:
            weight = module.weight
            table = self._table_of.get(id(weight))
            if table is None:
                table = _Table(weight=weight, names=[name])
                self._table_of[id(weight)] = table
                self._tables.append(table)
                self._handles.append(
                    weight.register_post_accumulate_grad_hook(
                        functools.partial(self._on_accumulated, table)
                    )
                )
            else:
                table.names.append(name)
            self._module_table[id(module)] = table
            self._handles.append(module.register_forward_hook(self._on_forward, with_kwargs=True))

    # ------------------------------------------------------------------ hooks
    def _on_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not (isinstance(output, Tensor) and output.requires_grad):
            return  # no gradient can reach the weight through this lookup
        table = self._module_table[id(module)]
        call = _make_call(table, module, args, kwargs)
        output.register_hook(functools.partial(self._on_output_grad, call))

    def _on_output_grad(self, call: _Call, grad: Tensor) -> None:
        table = call.table
        if table.weight.grad is None and not table.received:
            # A fresh accumulation (after zero_grad(set_to_none=True)): old counts describe
            # a gradient that no longer exists.
            _clear(table)
        if not call.received:
            call.received = True
            table.received.append(call)

    def _on_accumulated(self, table: _Table, weight: Tensor) -> None:
        calls, table.received = table.received, []
        for call in calls:
            call.received = False
        if calls:
            self._commit(table, calls)

    def _commit(self, table: _Table, calls: list[_Call]) -> None:
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

    # ------------------------------------------------------------------ the rule
    def apply(self, batch_size: int | None = None) -> None:
        """Rescale the recorded tables' ``p.grad`` into the AdaBatch aggregate, then `reset`.

        Row r becomes ``p.grad[r] · b / c_r`` (``loss_reduction="mean"``) or
        ``p.grad[r] / c_r`` (``"sum"``); rows with ``c_r = 0`` are left as they are (zero).

        Args:
            batch_size: b, the number of samples the mean loss averages over (all
                micro-batches together). By default, the number of samples the lookups
                recorded since the last reset (their dim 0, summed over backwards); pass it
                when that is ambiguous (tables that disagree, e.g. one unused by some
                micro-batch). Ignored with ``loss_reduction="sum"``.

        Raises:
            RuntimeError: nothing was recorded since the last reset (no forward and backward
                through the embeddings).
            ValueError: ``batch_size`` is needed and cannot be inferred, or is not a positive
                integer; or the recorded lookups cannot be counted (see the message).
        """
        recorded = [table for table in self._tables if table.backwards > 0]
        if not recorded:
            raise RuntimeError(
                f"no batch recorded for the embeddings {self._names()} since the last "
                "reset: run forward and loss.backward() through them (with gradients enabled) "
                "before apply()/step(), and apply once per step"
            )
        for table in recorded:
            if table.error is not None:
                raise ValueError(table.error)
        if self.loss_reduction == "sum":
            b = 1
        elif batch_size is not None:
            b = as_int(batch_size, "batch_size", minimum=1)
        else:
            b = self._infer_batch_size(recorded)
        with torch.no_grad():
            for table in recorded:
                assert table.counts is not None
                _rescale(table.weight, table.counts, b)
        self.reset()

    def _infer_batch_size(self, recorded: list[_Table]) -> int:
        sizes = {table.samples if table.samples_known else None for table in recorded}
        if len(sizes) == 1 and None not in sizes:
            return sizes.pop()  # type: ignore[return-value]
        seen = ", ".join(
            f"{table.names[0]!r}: {table.samples if table.samples_known else 'ambiguous'}"
            for table in recorded
        )
        raise ValueError(
            "cannot infer b, the number of samples the mean loss averages over, from the "
            f"recorded lookups ({seen}); pass it explicitly, apply(batch_size=b) or "
            "step(batch_size=b)"
        )

    def reset(self) -> None:
        """Forget every recorded lookup (the counts restart from zero)."""
        for table in self._tables:
            _clear(table)
            for call in table.received:
                call.received = False
            table.received = []

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Make `apply` run before every ``optimizer.step()`` (a step pre-hook).

        The optimizer stays a plain torch optimizer (LR schedulers, ``state_dict``, the
        `adabatch.training.Trainer` work unchanged); the batch size is inferred. Remove the
        hook with the returned handle's ``remove()``.

        Raises:
            TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
            ValueError: it does not update one of the embedding weights.
        """
        self._check_optimizer(optimizer)

        def hook(opt: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.apply()

        return optimizer.register_step_pre_hook(hook)

    def _check_optimizer(self, optimizer: Any) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [table.names[0] for table in self._tables if id(table.weight) not in updated]
        if missing:
            raise ValueError(
                f"the optimizer does not update the weight of embedding(s) {missing}; build it "
                "on the model's parameters (or leave those tables out of the aggregation)"
            )

    # ------------------------------------------------------------------ inspection
    def counts(self, embedding: nn.Module | Tensor) -> Tensor:
        """A copy of the row counts c (int64, length V) recorded for ``embedding``.

        ``embedding`` is one of the modules (or its weight). Zeros when nothing is recorded.
        """
        table = self._lookup(embedding)
        if table.counts is None:
            return torch.zeros(table.num_embeddings, dtype=torch.long, device=table.weight.device)
        return table.counts.clone()

    def samples(self, embedding: nn.Module | Tensor) -> int | None:
        """Samples recorded for ``embedding`` since the last reset (None: ambiguous)."""
        table = self._lookup(embedding)
        return table.samples if table.samples_known else None

    def _lookup(self, embedding: nn.Module | Tensor) -> _Table:
        table = (
            self._table_of.get(id(embedding))
            if isinstance(embedding, Tensor)
            else self._module_table.get(id(embedding))
        )
        if table is None:
            raise KeyError(
                f"{type(embedding).__name__} is not one of the aggregated embeddings "
                f"{self._names()}"
            )
        return table

    def _names(self) -> list[str]:
        return [name for table in self._tables for name in table.names]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Configuration and the counts recorded so far (mid-accumulation checkpoints)."""
        return {
            "count": self.count,
            "loss_reduction": self.loss_reduction,
            "tables": [
                {
                    "names": list(table.names),
                    "num_embeddings": table.num_embeddings,
                    "counts": None if table.counts is None else table.counts.detach().cpu(),
                    "samples": table.samples,
                    "samples_known": table.samples_known,
                    "backwards": table.backwards,
                    "error": table.error,
                }
                for table in self._tables
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` saved (same count mode, reduction and tables).

        Raises:
            ValueError: the state was saved with another configuration or other tables.
        """
        for key in ("count", "loss_reduction"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"state_dict was saved with {key}={state.get(key)!r}, this aggregation has "
                    f"{key}={getattr(self, key)!r}; construct it with the saved value"
                )
        saved = list(state["tables"])
        shapes = [entry["num_embeddings"] for entry in saved]
        mine = [table.num_embeddings for table in self._tables]
        if shapes != mine:
            raise ValueError(
                f"state_dict holds tables with {shapes} rows, this aggregation has {mine}; "
                "load it into an aggregation over the same embeddings, in the same order"
            )
        self.reset()
        for table, entry in zip(self._tables, saved, strict=True):
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

    # ------------------------------------------------------------------ lifetime
    def remove(self) -> None:
        """Remove every hook; the aggregation records nothing afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.reset()

    def __enter__(self) -> EmbeddingAggregation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._names()}, loss_reduction={self.loss_reduction!r}, "
            f"count={self.count!r})"
        )


class AdaBatchEmbeddings:
    """A torch optimizer whose embedding gradients are AdaBatch-aggregated before each step.

    ``step()`` = `EmbeddingAggregation.apply` (``p.grad[r] · b / c_r`` on the embedding rows)
    then the wrapped optimizer's step with its LR as given — the single-sample step size; do
    not scale it with b. ``zero_grad()`` also forgets the recorded lookups. ``state_dict()``
    holds the wrapped optimizer's state and the counts. ``param_groups`` / ``state`` are the
    wrapped optimizer's (shared, so LR changes reach it); build LR schedulers on
    ``wrapper.optimizer``. To keep a plain optimizer instead (e.g. for
    `adabatch.training.Trainer`), use ``EmbeddingAggregation(model).attach(optimizer)``.

    Example::

        opt = AdaBatchEmbeddings(torch.optim.SGD(model.parameters(), lr=0.1), model)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    Args:
        optimizer: the torch optimizer to wrap; it must update the embedding weights.
        embeddings: as for `EmbeddingAggregation` (a model, an embedding, or several).
        loss_reduction: ``"mean"`` or ``"sum"``, the loss's reduction over samples.
        count: ``"samples"`` or ``"occurrences"``.

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: as `EmbeddingAggregation`, or an embedding weight the optimizer does not
            update.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        embeddings: nn.Module | Iterable[nn.Module],
        *,
        loss_reduction: LossReduction = "mean",
        count: Count = "samples",
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}; "
                "wrap e.g. torch.optim.SGD(model.parameters(), lr=...)"
            )
        self.optimizer = optimizer
        self.aggregation = EmbeddingAggregation(
            embeddings, loss_reduction=loss_reduction, count=count
        )
        try:
            self.aggregation._check_optimizer(optimizer)
        except ValueError:
            self.aggregation.remove()
            raise

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (the same list)."""
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        """The wrapped optimizer's per-parameter state."""
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        """The wrapped optimizer's defaults."""
        return self.optimizer.defaults

    def step(
        self, closure: Callable[[], Any] | None = None, *, batch_size: int | None = None
    ) -> Any:
        """Aggregate the embedding gradients, then step the wrapped optimizer.

        Args:
            closure: optional; evaluated once (with gradients enabled) before the aggregation,
                its value returned. Optimizers that re-evaluate it (LBFGS) are not supported.
            batch_size: b for a mean loss when it cannot be inferred (see
                `EmbeddingAggregation.apply`).

        Raises:
            RuntimeError: no batch was recorded since the last step / zero_grad.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.aggregation.apply(batch_size)
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``; the recorded lookups are forgotten too."""
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self.aggregation.reset()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """The wrapped optimizer's ``add_param_group``."""
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": wrapped state_dict, "aggregation": counts and configuration}``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "aggregation": self.aggregation.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` saved.

        Raises:
            ValueError: ``state`` is not an `AdaBatchEmbeddings` state (e.g. a bare optimizer
                state_dict), or the aggregation's configuration differs.
        """
        if not isinstance(state, Mapping) or set(state) != {"optimizer", "aggregation"}:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                "expected the state_dict of an AdaBatchEmbeddings, with keys ['aggregation', "
                f"'optimizer'], got {got}; a bare optimizer state goes to wrapper.optimizer"
            )
        self.aggregation.load_state_dict(state["aggregation"])
        self.optimizer.load_state_dict(state["optimizer"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r}, {self.aggregation!r})"


# ---------------------------------------------------------------------- helpers
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
    table: _Table, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _Call:
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
    return _Call(table, samples, sample_ids, tokens, keep)


def _clear(table: _Table) -> None:
    if table.counts is not None:
        table.counts.zero_()
    table.samples = 0
    table.samples_known = True
    table.backwards = 0
    table.error = None


def _rescale(weight: Tensor, counts: Tensor, b: int) -> None:
    """``weight.grad[r] *= b / counts[r]`` where ``counts[r] > 0``, in place (or replaced)."""
    grad = weight.grad
    if grad is None:
        return
    dtype = torch.promote_types(grad.dtype, torch.float32)
    scale = torch.where(
        counts > 0, b / counts.clamp(min=1).to(dtype), torch.ones((), dtype=dtype)
    ).to(grad.dtype)
    if grad.is_sparse:
        grad = grad.coalesce()
        rows = grad.indices()[0]
        values = grad.values()
        values = values * scale.index_select(0, rows).view(-1, *([1] * (values.dim() - 1)))
        weight.grad = torch.sparse_coo_tensor(
            grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
        )
    else:
        grad.mul_(scale.view(-1, *([1] * (grad.dim() - 1))))
