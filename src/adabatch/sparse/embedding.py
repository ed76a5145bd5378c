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
parameter of the network keeps its ordinary mean gradient. Whether c_r counts samples or
occurrences is open (``docs/methods.md`` §2.3); both are offered:

* ``count="samples"`` (default, the paper's cⱼ): c_r = #{i : sample i looks up token r at least
  once} — a token repeated within a sample counts once;
* ``count="occurrences"``: c_r = the number of lookups of token r in the batch.

The rescaling is applied to ``p.grad`` after the backward pass. With a mean loss over b samples
``p.grad[r] = (1/b)·S_r``, so ``d_r = p.grad[r]·b/c_r`` (``loss_reduction="mean"``); with a
summed loss ``d_r = p.grad[r]/c_r`` (``loss_reduction="sum"``). Dense gradients and the sparse
gradients of ``nn.Embedding(sparse=True)`` are both handled.

The counts are measured by `adabatch.sparse.embedding_counts.LookupCounts`, through hooks and
with no change to the model; its module docstring says how and what that assumes (the batch is
dim 0 of the indices, one backward is one set of samples, DistributedDataParallel needs the
counts all-reduced, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._types import LOSS_REDUCTIONS, LossReduction
from .._validate import as_int, check_choice, check_reduction
from .embedding_counts import COUNTS, Count, LookupCounts, Table

__all__ = [
    "COUNTS",
    "REDUCTIONS",
    "AdaBatchEmbeddings",
    "Count",
    "EmbeddingAggregation",
    "LossReduction",
]

#: How the loss reduces over the batch's samples, i.e. what ``p.grad`` holds before `apply`
#: (the package's `adabatch._types.LOSS_REDUCTIONS`).
REDUCTIONS: tuple[str, ...] = LOSS_REDUCTIONS


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
        self.loss_reduction: str = check_reduction(loss_reduction)
        self._lookups = LookupCounts(embeddings, self.count)

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
        recorded = self._lookups.recorded()
        if not recorded:
            raise RuntimeError(
                f"no batch recorded for the embeddings {self._lookups.names()} since the last "
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

    def _infer_batch_size(self, recorded: list[Table]) -> int:
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
        self._lookups.reset()

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
        missing = [
            table.names[0] for table in self._lookups.tables if id(table.weight) not in updated
        ]
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
        return self._lookups.counts(embedding)

    def samples(self, embedding: nn.Module | Tensor) -> int | None:
        """Samples recorded for ``embedding`` since the last reset (None: ambiguous)."""
        return self._lookups.samples(embedding)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Configuration and the counts recorded so far (mid-accumulation checkpoints)."""
        return {
            "count": self.count,
            "loss_reduction": self.loss_reduction,
            "tables": self._lookups.state_dict(),
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
        self._lookups.load_state_dict(state["tables"])

    # ------------------------------------------------------------------ lifetime
    def remove(self) -> None:
        """Remove every hook; the aggregation records nothing afterwards."""
        self._lookups.remove()

    def __enter__(self) -> EmbeddingAggregation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._lookups.names()}, "
            f"loss_reduction={self.loss_reduction!r}, count={self.count!r})"
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
