"""`GradStats`: the additive summary of a batch's per-sample gradients.

For a batch of b samples let gᵢ be the gradient of sample i's own loss (the loss function
applied to a batch holding only sample i, without weight decay) and ḡ = (1/b) Σᵢ gᵢ.

======================  ==========================================  ======================
field                   value                                       merges by
======================  ==========================================  ======================
``num_samples``         b                                           addition
``grad_sum``            Σᵢ gᵢ, one tensor per trainable parameter   addition
``sum_sq_norms``        S2 = Σᵢ ‖gᵢ‖²                               addition
``coord_sq_sum``        M = Σᵢ gᵢ ⊙ gᵢ, per parameter (optional)    addition
``sum_sq_inner``        P2 = Σᵢ ⟨gᵢ, ḡ⟩² (optional)                 see below
``layer_inner_sum``     Σ_l Σᵢ ⟨gᵢ^(l), ḡ^(l)⟩² (optional)          see below
======================  ==========================================  ======================

NOTE [merged P2]: P2 is taken against the mean of the batch it was computed on. That mean is
not known until every sample of the batch has been seen, so P2 cannot be added across
micro-batches, epoch windows or ranks the way the other fields can. Adding two summaries
therefore keeps P2 *per group*: ``sum_sq_inner`` becomes Σ_c P2_c over the k merged groups,
and two more additive scalars are kept so that the estimators stay exact functions of the
merged summary:

* ``group_norm4_sum``   = Σ_c b_c ‖ḡ_c‖⁴
* ``group_ratio_sum``   = Σ_c P2_c / ‖ḡ_c‖²    (a group with ḡ_c = 0 contributes 0)

With them, `inner_product_variance` and `orthogonal_variance` of a merged summary are the
*pooled within-group* variances, (Σ_c (P2_c − b_c‖ḡ_c‖⁴)) / (b − k) and
(S2 − Σ_c P2_c/‖ḡ_c‖²) / (b − k): each group's projections are taken along its own mean
direction. For a single batch (k = 1) they are exactly the textbook sample variances. The
additive fields (b, Σgᵢ, S2, M) of a merged summary are exactly those of the union.

NOTE [layerwise]: the AdAdaGrad authors' code (timlautk/AdAdaGrad, ``tests.py``) takes the
inner products per parameter tensor l instead: pᵢ^(l) = ⟨gᵢ^(l), ḡ^(l)⟩ with gᵢ^(l), ḡ^(l)
the slices of gᵢ and ḡ belonging to tensor l. With Q_l = Σᵢ (pᵢ^(l))² (taken, like P2,
against the mean of the batch it was computed on), three more optional additive scalars are
kept per merged group c, exactly like ``group_norm4_sum`` and ``group_ratio_sum``:

* ``layer_inner_sum``   = Σ_c Σ_l Q_{c,l}
* ``layer_norm4_sum``   = Σ_c b_c Σ_l ‖ḡ_{c,l}‖⁴
* ``layer_ratio_sum``   = Σ_c Σ_l Q_{c,l} / ‖ḡ_{c,l}‖²    (a tensor with ḡ_{c,l} = 0 contributes 0)

from which ``mode="layerwise"`` of `inner_product_variance` and `orthogonal_variance` gives
Σ_l of the per-tensor variances, pooled within groups with b − k degrees of freedom. They
are None when not computed; the engines fill them whenever ``inner_products=True``.
Caveat: a tensor whose per-sample gradients cancel in the mean while being non-zero (a bias
right before a training-mode BatchNorm under ``batchnorm="approximate"``) has ḡ^(l) at
round-off level; its projection direction, hence its ratio term (somewhere between 0 and
its share of S2), is then round-off too. The global statistics have no such tensor-level
division.

Scalars are 0-dim float64 tensors on the device where they were computed, so that a training
loop that only accumulates never synchronises with the device; estimators convert to Python
floats when a decision is taken.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from ._sums import sum_of

__all__ = ["SCALAR_FIELDS", "GradStats", "full_zeros", "merge_fields", "sq_norm"]


def sq_norm(tensors: Mapping[str, Tensor] | list[Tensor]) -> Tensor:
    """Return Σ ‖t‖² over the tensors as a 0-dim float64 tensor (sparse tensors allowed)."""
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return _sum_float64(_sq_norm_terms(values))


def _sq_norm_terms(values: Iterable[Tensor]) -> list[Tensor]:
    """‖t‖² of each tensor, 0-dim float64, each on its tensor's device."""
    terms = []
    for t in values:
        if t.is_sparse:
            t = t.coalesce().values()
        # Reduced in the tensor's own dtype (a float64 copy would cost a pass over P);
        # torch sums float32 pairwise, so the relative error stays near float32 epsilon.
        terms.append(torch.linalg.vector_norm(t).double().square())
    return terms


def _layer_fields(
    num_samples: int, names: list[str], terms: list[Tensor], layer_sq_inner: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """(Σ_l Q_l, b Σ_l ‖ḡ^(l)‖⁴, Σ_l Q_l/‖ḡ^(l)‖²) of one batch; ``terms[l]`` = ‖Σᵢgᵢ^(l)‖²."""
    if set(layer_sq_inner) != set(names):
        odd = sorted(set(layer_sq_inner) ^ set(names))
        raise ValueError(
            f"layer_sq_inner must have one entry per grad_sum parameter; keys differ in {odd[:5]}"
        )
    if not names:
        zero = torch.zeros((), dtype=torch.float64)
        return zero, zero.clone(), zero.clone()
    device = layer_sq_inner[names[0]].device
    q = torch.stack(
        [layer_sq_inner[n].to(device=device, dtype=torch.float64).reshape(()) for n in names]
    )
    mean_sq = torch.stack([t.to(device) for t in terms]) / float(num_samples) ** 2  # ‖ḡ^(l)‖²
    ratio = torch.where(mean_sq > 0, q / mean_sq.clamp_min(1e-300), 0.0)
    return q.sum(), num_samples * mean_sq.square().sum(), ratio.sum()


def _add_maps(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str, in_place: bool = False
) -> dict[str, Tensor]:
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))
        raise ValueError(
            f"cannot add GradStats over different parameters: {what} keys differ in "
            f"{missing[:5]}; merge only statistics of the same model's trainable parameters"
        )
    if in_place:
        return {k: a[k].add_(b[k]) for k in a}
    return {k: a[k] + b[k] for k in a}


def _add_optional(
    a: Tensor | None, b: Tensor | None, what: str, in_place: bool = False
) -> Tensor | None:
    if (a is None) != (b is None):
        raise ValueError(
            f"cannot add GradStats where only one side has {what}; compute both with the "
            f"same options (inner_products=..., coordinates=...)"
        )
    if a is None or b is None:
        return None
    return a.add_(b) if in_place else a + b


@dataclasses.dataclass(frozen=True, eq=False)
class GradStats:
    """Additive per-sample gradient statistics of one batch, or of several merged batches.

    Build one with `GradStats.from_batch` (which fills the P2 bookkeeping), merge with ``+``
    or ``sum(list_of_stats)``. See the module docstring for the meaning of each field and of
    a merged P2.

    Attributes:
        num_samples: b, the number of samples summarised.
        grad_sum: Σᵢ gᵢ per trainable parameter name (un-averaged, no weight decay).
        sum_sq_norms: S2 = Σᵢ ‖gᵢ‖², 0-dim float64.
        sum_sq_inner: P2 = Σᵢ ⟨gᵢ, ḡ⟩² (per group, see module notes), or None.
        coord_sq_sum: Σᵢ gᵢ ⊙ gᵢ per parameter name, or None.
        num_groups: k, how many batches were merged into this summary.
        group_norm4_sum: Σ_c b_c‖ḡ_c‖⁴ over the merged groups (None without P2).
        group_ratio_sum: Σ_c P2_c/‖ḡ_c‖² over the merged groups (None without P2).
        layer_inner_sum: Σ_c Σ_l Q_{c,l}, Q_l = Σᵢ⟨gᵢ^(l), ḡ^(l)⟩² per parameter tensor l
            (see NOTE [layerwise]), or None.
        layer_norm4_sum: Σ_c b_c Σ_l ‖ḡ_{c,l}‖⁴ (None without the layer inner products).
        layer_ratio_sum: Σ_c Σ_l Q_{c,l}/‖ḡ_{c,l}‖² (None without the layer inner products).
    """

    num_samples: int
    grad_sum: Mapping[str, Tensor]
    sum_sq_norms: Tensor
    sum_sq_inner: Tensor | None = None
    coord_sq_sum: Mapping[str, Tensor] | None = None
    num_groups: int = 1
    group_norm4_sum: Tensor | None = None
    group_ratio_sum: Tensor | None = None
    layer_inner_sum: Tensor | None = None
    layer_norm4_sum: Tensor | None = None
    layer_ratio_sum: Tensor | None = None

    @classmethod
    def from_batch(
        cls,
        num_samples: int,
        grad_sum: Mapping[str, Tensor],
        sum_sq_norms: Tensor,
        sum_sq_inner: Tensor | None = None,
        coord_sq_sum: Mapping[str, Tensor] | None = None,
        layer_sq_inner: Mapping[str, Tensor] | None = None,
    ) -> GradStats:
        """Summarise one batch whose P2 (if given) is taken against this batch's own mean.

        ``layer_sq_inner`` maps every name of ``grad_sum`` to Q_l = Σᵢ⟨gᵢ^(l), ḡ^(l)⟩², the
        per-tensor inner products of this batch (see NOTE [layerwise]); it fills the
        ``layer_*`` fields.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        # ‖Σᵢgᵢ^(l)‖² per tensor: one pass over the gradients serves the global and the
        # layerwise terms.
        terms: list[Tensor] = []
        if sum_sq_inner is not None or layer_sq_inner is not None:
            terms = _sq_norm_terms(grad_sum.values())
        layer: tuple[Tensor | None, Tensor | None, Tensor | None] = (None, None, None)
        if layer_sq_inner is not None:
            layer = _layer_fields(num_samples, list(grad_sum), terms, layer_sq_inner)
        norm4 = ratio = p2 = None
        if sum_sq_inner is not None:
            p2 = sum_sq_inner.to(torch.float64)
            mean_sq = _sum_float64(terms).to(p2.device) / float(num_samples) ** 2  # ‖ḡ‖²
            norm4 = num_samples * mean_sq.square()
            # P2/‖ḡ‖², defined as 0 when ḡ = 0 (then every ⟨gᵢ, ḡ⟩ = 0 and P2 = 0 too).
            ratio = torch.where(mean_sq > 0, p2 / mean_sq.clamp_min(1e-300), 0.0)
        stats = cls(
            num_samples=int(num_samples),
            grad_sum=dict(grad_sum),
            sum_sq_norms=sum_sq_norms.to(torch.float64),
            sum_sq_inner=p2,
            coord_sq_sum=None if coord_sq_sum is None else dict(coord_sq_sum),
            num_groups=1,
            group_norm4_sum=norm4,
            group_ratio_sum=ratio,
            layer_inner_sum=layer[0],
            layer_norm4_sum=layer[1],
            layer_ratio_sum=layer[2],
        )
        if terms:  # the pass above already gave ‖Σgᵢ‖²: seed the cached property with it
            stats.__dict__["grad_sum_sq_norm"] = _sum_float64(terms)
        return stats

    @classmethod
    def empty(
        cls,
        params: Mapping[str, Tensor],
        *,
        inner_products: bool = False,
        coordinates: bool = False,
    ) -> GradStats:
        """The statistics of no sample: zeros shaped like ``params`` (name → tensor).

        The neutral element of ``+``: a rank whose shard of the batch is empty contributes
        this to `adabatch.distributed.all_reduce_stats`, so that every rank still joins the
        collective. Example: ``GradStats.empty(dict(model.named_parameters()))``.
        """
        zeros = {n: full_zeros(t) for n, t in params.items()}
        device = next(iter(zeros.values())).device if zeros else None
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(
            num_samples=0,
            grad_sum=zeros,
            sum_sq_norms=zero,
            sum_sq_inner=zero.clone() if inner_products else None,
            coord_sq_sum={n: z.clone() for n, z in zeros.items()} if coordinates else None,
            num_groups=0,
            group_norm4_sum=zero.clone() if inner_products else None,
            group_ratio_sum=zero.clone() if inner_products else None,
            layer_inner_sum=zero.clone() if inner_products else None,
            layer_norm4_sum=zero.clone() if inner_products else None,
            layer_ratio_sum=zero.clone() if inner_products else None,
        )

    @functools.cached_property
    def grad_sum_sq_norm(self) -> Tensor:
        """‖Σᵢ gᵢ‖² over all parameters (0-dim float64), computed once per summary.

        Every estimator that needs ‖ḡ‖² reads it, so a decision that combines several of
        them makes one pass over the parameters, not one per estimator. (A frozen
        summary never changes, so the cached value stays valid.)
        """
        return sq_norm(self.grad_sum)

    def mean_grad(self) -> dict[str, Tensor]:
        """ḡ = Σᵢ gᵢ / b per parameter."""
        return {k: v / self.num_samples for k, v in self.grad_sum.items()}

    def fields(self) -> dict[str, object]:
        """The dataclass fields by name (the same objects, not copies)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __add__(self, other: GradStats) -> GradStats:
        if not isinstance(other, GradStats):
            return NotImplemented
        return GradStats(**merge_fields(self.fields(), other, in_place=False))

    def __radd__(self, other: object) -> GradStats:
        # Lets `sum(list_of_stats)` start from the integer 0.
        if other == 0:
            return self
        return NotImplemented  # type: ignore[return-value]

    def detach_copy(self) -> GradStats:
        """A copy that shares no storage with the tensors it was built from."""
        return _map_tensors(self, lambda t: t.detach().clone())

    def to(self, device: torch.device | str) -> GradStats:
        """The same statistics with every tensor moved to ``device``."""
        return _map_tensors(self, lambda t: t.to(device))

    def state_dict(self) -> dict[str, object]:
        """A plain dict for checkpoints (tensors are kept as they are)."""
        return self.fields()

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object]) -> GradStats:
        """Inverse of `state_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(state) - names)
        if unknown:
            raise ValueError(
                f"unknown GradStats fields {unknown}; expected a subset of {sorted(names)}"
            )
        return cls(**state)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        parts = [f"num_samples={self.num_samples}", f"params={len(self.grad_sum)}"]
        parts.append(f"sum_sq_norms={float(self.sum_sq_norms):.6g}")
        if self.sum_sq_inner is not None:
            parts.append(f"sum_sq_inner={float(self.sum_sq_inner):.6g}")
        if self.coord_sq_sum is not None:
            parts.append("coord_sq_sum=...")
        if self.num_groups != 1:
            parts.append(f"num_groups={self.num_groups}")
        return f"GradStats({', '.join(parts)})"


def merge_fields(
    fields: Mapping[str, object], other: GradStats, *, in_place: bool
) -> dict[str, object]:
    """The fields of (the summary with ``fields``) + ``other``, one rule for every field.

    Counts and sums add; P2 and the layerwise terms add as the per-group bookkeeping of the
    module notes says. With ``in_place`` the sums are written into the tensors of ``fields``
    (which the caller must own, as `adabatch.stats.StatsWindow` does with its buffers); a
    `GradStats` itself is never modified.
    """
    grad_sum = _add_maps(fields["grad_sum"], other.grad_sum, "grad_sum", in_place)  # type: ignore[arg-type]
    coords_a = fields["coord_sq_sum"]
    if (coords_a is None) != (other.coord_sq_sum is None):
        raise ValueError(
            "cannot add GradStats where only one side has coord_sq_sum; compute both "
            "with the same coordinates=... option"
        )
    coords = None
    if coords_a is not None and other.coord_sq_sum is not None:
        coords = _add_maps(coords_a, other.coord_sq_sum, "coord_sq_sum", in_place)  # type: ignore[arg-type]
    if (fields["layer_inner_sum"] is None) != (other.layer_inner_sum is None):
        raise ValueError(
            "cannot add GradStats where only one side has the layerwise inner products "
            "(layer_inner_sum, layer_norm4_sum, layer_ratio_sum); the engines compute them "
            "with inner_products=True, GradStats.from_batch with layer_sq_inner=..."
        )
    merged: dict[str, object] = {
        "num_samples": fields["num_samples"] + other.num_samples,  # type: ignore[operator]
        "grad_sum": grad_sum,
        "coord_sq_sum": coords,
        "num_groups": fields["num_groups"] + other.num_groups,  # type: ignore[operator]
    }
    for name, what in SCALAR_FIELDS.items():
        merged[name] = _add_optional(fields[name], getattr(other, name), what, in_place)  # type: ignore[arg-type]
    return merged


#: The 0-dim float64 fields (every one adds across batches and ranks), with the name an
#: error about a mismatch uses for each.
SCALAR_FIELDS = {
    "sum_sq_norms": "S2",
    "sum_sq_inner": "sum_sq_inner",
    "group_norm4_sum": "P2",
    "group_ratio_sum": "P2",
    "layer_inner_sum": "Q",
    "layer_norm4_sum": "Q",
    "layer_ratio_sum": "Q",
}


def _map_tensors(stats: GradStats, fn: Callable[[Tensor], Tensor]) -> GradStats:
    def per_name(maps: Mapping[str, Tensor] | None) -> dict[str, Tensor] | None:
        return None if maps is None else {k: fn(v) for k, v in maps.items()}

    scalars = {
        name: None if (t := getattr(stats, name)) is None else fn(t) for name in SCALAR_FIELDS
    }
    return dataclasses.replace(
        stats,
        grad_sum=per_name(stats.grad_sum),
        coord_sq_sum=per_name(stats.coord_sq_sum),
        **scalars,
    )


def _sum_float64(terms: list[Tensor]) -> Tensor:
    """Σ of 0-dim float64 terms (0 for none)."""
    return sum_of(terms, empty=torch.zeros((), dtype=torch.float64))


def full_zeros(p: Tensor) -> Tensor:
    """Contiguous zeros of ``p``'s whole shape (a sharded DTensor's unsharded shape, FSDP2).

    A plain tensor, never a DTensor: ``zeros_like`` of a shard would be sharded too.
    """
    return torch.zeros(p.shape, dtype=p.dtype, device=p.device)
