"""One forward/backward pass (one micro-batch) of the hooks engine, and its finalisation.

Layer results arrive in hook scale during the backward (see NOTE [scales] in ``hooks.py``);
`PassRecord.finalize` rescales once and builds the pass's `GradStats`. Inner products are
kept per parameter (qualname), so that finalize gives both the global P2 = Σᵢ(Σ_l pᵢ^(l))²
and the per-tensor Q_l = Σᵢ(pᵢ^(l))² of the "layerwise" statistics.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..rules import LayerCall, LayerResult, LayerRule, Need
from ..rules.base import sum_of_dots
from ..summary import GradStats, full_zeros

__all__ = ["PassRecord"]


class PassRecord:
    """Statistics of one pass, accumulated layer by layer during its backward.

    Attributes:
        batch_size: b of the pass (from the model's input, else from the first layer).
        loss_weight: w, a factor the caller multiplied the loss by (micro-batching weighs a
            chunk's mean loss by its share of the logical batch).
        scale: s, the factor from hook scale to per-sample gradients: b/w for a mean loss,
            1/w for a sum (set when the batch size is known).
        uses: how many calls used each parameter in the forward (> 1: tied).
        backward_calls: how many layer backwards have run (0: the pass never ran backward).
    """

    def __init__(self, batch_size: int | None, mean_loss: bool, loss_weight: float = 1.0) -> None:
        self.batch_size = batch_size
        self.mean_loss = mean_loss
        self.loss_weight = loss_weight
        self.uses: dict[str, int] = {}
        self.backward_calls = 0
        self._grad_sum: dict[str, Tensor] = {}  # true scale (Σgᵢ)
        self._sq_terms: list[Tensor] = []
        self._inner: dict[str, Tensor] = {}  # qualname → qᵢ^(l), hook scale, length b
        self._coords: dict[str, Tensor] = {}
        self._deferred: list[tuple[LayerRule, LayerCall, tuple[str, ...]]] = []

    @property
    def scale(self) -> float:
        assert self.batch_size is not None
        if self.loss_weight == 0.0:
            if self.batch_size == 0:
                return 0.0  # an empty share (a rank's slice of a short batch): no terms
            raise ValueError(
                f"a loss weight of 0 on a pass of {self.batch_size} samples: their gradients "
                "are zero and their statistics cannot be recovered; weigh only empty batches by 0"
            )
        return (float(self.batch_size) if self.mean_loss else 1.0) / self.loss_weight

    def is_tied(self, qualnames: Iterable[str]) -> bool:
        """Whether any of these parameters is used by more than one call in this pass."""
        return any(self.uses[q] > 1 for q in qualnames)

    def add(self, result: LayerResult, qualnames: tuple[str, ...]) -> None:
        """Add one call's gradients and statistics."""
        self._add_grads(result, qualnames)
        self._sq_terms.append(result.sq_norm)
        if result.inner is not None:
            self._add_inner(zip(qualnames, result.inner, strict=True))
        if result.coord_sq is not None:
            for q, m in zip(qualnames, result.coord_sq, strict=True):
                self._coords[q] = self._coords[q] + m if q in self._coords else m

    def add_tied(
        self, rule: LayerRule, call: LayerCall, result: LayerResult, qualnames: tuple[str, ...]
    ) -> None:
        """Add a call on shared parameters: its gradients now, its statistics at finalize."""
        self._add_grads(result, qualnames)
        self._deferred.append((rule, call, qualnames))

    def _add_inner(self, pairs: Iterable[tuple[str, Tensor]]) -> None:
        for q, v in pairs:
            self._inner[q] = self._inner[q] + v if q in self._inner else v

    def _add_grads(self, result: LayerResult, qualnames: tuple[str, ...]) -> None:
        s = self.scale
        for q, g in zip(qualnames, result.grads, strict=True):
            # A copy: autograd may hand `g` itself to p.grad, which the user may then modify.
            if q in self._grad_sum:
                self._grad_sum[q] = torch.add(self._grad_sum[q], g, alpha=s)
            else:
                self._grad_sum[q] = g * s if s != 1.0 else g.clone()

    def finalize(self, named_params: list[tuple[str, nn.Parameter]], need: Need) -> GradStats:
        """The pass's `GradStats` (call once, after its backward, without grad mode)."""
        b = self.batch_size
        assert b is not None
        s = self.scale
        if self._deferred:
            self._finalize_tied(need)
        grad_sum: dict[str, Tensor] = {}
        for name, p in named_params:
            if name in self._grad_sum:
                grad_sum[name] = self._grad_sum[name]
            elif p.requires_grad:
                grad_sum[name] = full_zeros(p)
        device = next(iter(grad_sum.values())).device if grad_sum else None
        terms = self._sq_terms
        if terms:
            sq = (terms[0] if len(terms) == 1 else torch.stack(terms).sum()).double() * s**2
        else:
            sq = torch.zeros((), dtype=torch.float64, device=device)
        p2 = layer_sq = None
        if need.inner:
            zero = torch.zeros((), dtype=torch.float64, device=device)
            layer_sq = {name: zero for name in grad_sum}  # no rule call: Q_l = 0
            if not self._inner:
                p2 = zero
            else:
                # pᵢ^(l) = ⟨gᵢ^(l), ḡ^(l)⟩ = (s²/b)·qᵢ^(l); the global pᵢ = Σ_l pᵢ^(l) is
                # summed over parameters before squaring.
                names = list(self._inner)
                per_param = torch.stack([self._inner[n].to(torch.float64) for n in names])
                per_param.mul_(s**2 / b)
                p = per_param.sum(0)
                p2 = torch.dot(p, p)
                q = (per_param * per_param).sum(1)
                layer_sq.update(zip(names, q.unbind(), strict=True))
        coords = None
        if need.coords:
            coords = {}
            for name, g in grad_sum.items():
                m = self._coords.get(name)
                coords[name] = m * s**2 if m is not None else torch.zeros_like(g)
        return GradStats.from_batch(b, grad_sum, sq, p2, coords, layer_sq)

    def _finalize_tied(self, need: Need) -> None:
        """Statistics of calls sharing parameters: per-sample blocks summed across calls."""
        b = self.batch_size
        assert b is not None
        # Hook-scale total gradient of every parameter touched by a deferred call.
        totals = {q: self._grad_sum[q] / self.scale for _, _, qs in self._deferred for q in qs}
        numel = sum(t.numel() for t in totals.values())
        itemsize = next(iter(totals.values())).element_size()
        rows_per_block = max(1, need.max_block_bytes // max(1, numel * itemsize))
        inner_parts: dict[str, list[Tensor]] = {}
        for start in range(0, b, rows_per_block):
            rows = slice(start, min(b, start + rows_per_block))
            blocks: dict[str, Tensor] = {}
            for rule, call, qs in self._deferred:
                for q, g in zip(qs, rule.per_sample(call, rows), strict=True):
                    blocks[q] = blocks[q] + g if q in blocks else g
            m = rows.stop - rows.start
            flat = {q: g.reshape(m, -1) for q, g in blocks.items()}
            self._sq_terms.append(sum_of_dots(list(flat.values())))
            if need.inner:
                for q, f in flat.items():
                    inner_parts.setdefault(q, []).append(f @ totals[q].reshape(-1))
            if need.coords:
                for q, g in blocks.items():
                    sq = (g * g).sum(0)
                    self._coords[q] = self._coords[q] + sq if q in self._coords else sq
        self._add_inner((q, torch.cat(parts)) for q, parts in inner_parts.items())
        self._deferred.clear()
