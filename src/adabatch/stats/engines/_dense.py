"""Statistics from an explicit stack of per-sample gradients (the reference and functorch engines).

Written as plain loops over samples and parameters, in the order of the definitions, because
these engines are the oracles the fast engine is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..summary import GradStats

__all__ = ["stats_from_per_sample"]


def stats_from_per_sample(
    per_sample: dict[str, Tensor], num_samples: int, inner_products: bool, coordinates: bool
) -> GradStats:
    """GradStats from per-sample gradients ``per_sample[name]`` of shape (b, *param.shape).

    Σgᵢ, S2 = Σ‖gᵢ‖², P2 = Σ⟨gᵢ, ḡ⟩² with ⟨·,·⟩ over all parameters, M = Σgᵢ⊙gᵢ, and per
    parameter tensor l, Q_l = Σᵢ⟨gᵢ^(l), ḡ^(l)⟩² (the "layerwise" inner products).
    """
    b = num_samples
    grad_sum = {n: g.sum(0) for n, g in per_sample.items()}
    mean = {n: g / b for n, g in grad_sum.items()}
    device = next(iter(per_sample.values())).device if per_sample else None
    sq = torch.zeros((), dtype=torch.float64, device=device)
    inner = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(b)]
    layer_sq: dict[str, Tensor] = {}
    for name, g in per_sample.items():
        q_l = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(b):
            gi = g[i].double()
            sq = sq + (gi * gi).sum()
            p_il = (gi * mean[name].double()).sum()  # ⟨gᵢ^(l), ḡ^(l)⟩
            inner[i] = inner[i] + p_il
            q_l = q_l + p_il * p_il
        layer_sq[name] = q_l
    p2 = sum(p * p for p in inner) if inner_products else None
    coords = {n: (g * g).sum(0) for n, g in per_sample.items()} if coordinates else None
    layer = layer_sq if inner_products else None
    return GradStats.from_batch(b, grad_sum, sq, p2, coords, layer)  # type: ignore[arg-type]
