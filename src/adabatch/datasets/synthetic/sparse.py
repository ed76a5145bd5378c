"""Sparse rows with Zipf-distributed feature frequencies, labelled by a linear teacher.

The sparse problems of AdaBatch (Défossez & Bach), where rare features matter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import SparseDataset
from ._common import (
    _CALIBRATION,
    _SAMPLES,
    _check_int,
    _check_noise,
    _check_seed,
    _check_teacher,
    _generator,
    _teacher_vector,
    flip_labels,
    linear_teacher,
)

__all__ = ["sample_distinct", "sparse_teacher", "synthetic_sparse", "zipf_probabilities"]

# Rounds of `sample_distinct` before giving up (tens suffice; a thousand means the law's
# remaining mass is lost to float64 rounding).
_MAX_ROUNDS = 1000


def zipf_probabilities(d: int, exponent: float = 1.0) -> Tensor:
    """The Zipf law over d features: p_j = (j + 1)^(−s) / Σ_{i<d} (i + 1)^(−s), float64.

    Feature 0 is the most frequent. Example: d = 3, s = 1 gives p = (6, 3, 2)/11.
    """
    _check_int("d", d, 1, "pass the number of features")
    if not (math.isfinite(exponent) and exponent >= 0):
        raise ValueError(
            f"zipf_exponent must be a finite number >= 0, got {exponent!r}; 0 is uniform, "
            "1 is the classic Zipf law, larger values concentrate mass on the first features"
        )
    ranks = torch.arange(1, d + 1, dtype=torch.float64)
    weights = ranks.pow(-float(exponent))
    return weights / weights.sum()


def sample_distinct(
    probabilities: Tensor, rows: int, k: int, *, generator: torch.Generator
) -> Tensor:
    """``rows × k`` sorted column indices: per row, k distinct draws from ``probabilities``.

    The law is successive sampling without replacement (that of
    ``torch.multinomial(p, k, replacement=False)``): draw columns i.i.d. from p, discard
    repeats, and stop at the k-th distinct column. Rows are independent.

    Vectorised as that very process, in rounds. A row holding the set S with e empty slots
    draws e columns i.i.d. from p restricted to the columns outside S (by inverse CDF, see
    `_draw_outside`) and keeps the distinct ones; repeats empty their slots for the next
    round. Drawing outside S is the stream's law once S is taken (its draws inside S would
    be discarded anyway), so the process is exact, and skewed laws do not waste rounds on
    redrawing their head. Rows go in chunks of ≈ 4M slots.

    Args:
        probabilities: nonnegative weights over the d columns (normalised here).
        rows: number of rows.
        k: distinct columns per row; at most the number of positive weights.
        generator: the random stream.
    """
    p = probabilities.to(torch.float64)
    d = p.numel()
    support = int((p > 0).sum())
    if k > support:
        raise ValueError(
            f"cannot draw {k} distinct columns from {support} with positive probability; "
            "lower nnz_per_sample or raise d"
        )
    p = p / p.sum()
    cdf = torch.cumsum(p, 0)
    # Inverse-CDF sampling reaches column j only if F(j) > F(j - 1) in float64: a law so
    # skewed that its tail rounds away cannot fill k slots (and would loop forever).
    reachable = int((torch.diff(cdf, prepend=cdf.new_zeros(1)) > 0).sum())
    if k > reachable:
        raise ValueError(
            f"only {reachable} columns have a probability visible in float64, fewer than the "
            f"{k} distinct columns asked; lower nnz_per_sample or zipf_exponent"
        )
    # Column d is a sentinel for an empty slot: zero mass, CDF 1, sorted after the real ones.
    p_ext = torch.cat([p, p.new_zeros(1)])
    cdf_ext = torch.cat([cdf, p.new_ones(1)])
    out = torch.empty(rows, k, dtype=torch.int64)
    chunk = max(1, (1 << 22) // k)
    for start in range(0, rows, chunk):
        cols = torch.full((min(chunk, rows - start), k), d, dtype=torch.int64)
        pending = torch.arange(cols.shape[0])
        for _ in range(_MAX_ROUNDS):
            if pending.numel() == 0:
                break
            cols[pending] = _draw_outside(cols[pending], p_ext, cdf_ext, generator)
            empty = cols == d
            empty[:, 1:] |= cols[:, 1:] == cols[:, :-1]  # sorted: a repeat follows its original
            pending = empty.any(1).nonzero().squeeze(1)
            cols.masked_fill_(empty, d)
            cols[pending] = cols[pending].sort(1).values
        else:
            raise RuntimeError(
                f"sample_distinct did not fill {pending.numel()} rows in {_MAX_ROUNDS} rounds; "
                "the law's remaining mass is too small for float64: lower k or the skew"
            )
        out[start : start + cols.shape[0]] = cols
    return out


def _draw_outside(held: Tensor, p_ext: Tensor, cdf_ext: Tensor, g: torch.Generator) -> Tensor:
    """Fill the empty slots (sentinel d) of sorted rows with i.i.d. draws outside the row.

    Each new column j is drawn from p restricted to the columns the row does not hold: the
    smallest j with G(j) > v, where G(j) = F(j) − Σ_{held h ≤ j} p_h is the restricted CDF
    and v ~ U[0, 1 − Σ_held p_h). Between held columns h_t < h_{t+1}, G = F − c_t with
    c_t = Σ_{s ≤ t} p_{h_s}, and B_t = G(h_t) = F(h_t) − c_t is nondecreasing in t; so j lies
    in segment t* = #{t : B_t ≤ v} and j = searchsorted(F, v + c_{t*}). Sentinels have
    B = 1 − Σ_held p > v and are never counted. Returns the rows sorted.
    """
    d = p_ext.numel() - 1
    cum = p_ext[held].cumsum(1)
    bounds = (cdf_ext[held] - cum).contiguous()
    v = torch.rand(held.shape, generator=g, dtype=torch.float64) * (1 - cum[:, -1:])
    segment = torch.searchsorted(bounds, v, right=True)
    offset = torch.cat([cum.new_zeros(held.shape[0], 1), cum], 1).gather(1, segment)
    new = torch.searchsorted(cdf_ext[:d], v + offset, right=True)
    # Rounding may, rarely, land on a held column or past the last one (d, the sentinel): the
    # caller then sees a repeat or an empty slot and draws it again, rather than biasing the
    # draw towards the last column as a clamp would.
    return torch.where(held == d, new, held).sort(1).values


def sparse_teacher(
    d: int,
    *,
    nnz_per_sample: int = 20,
    zipf_exponent: float = 1.0,
    seed: int = 0,
    calibration_size: int = 8192,
) -> tuple[Tensor, float]:
    """The teacher (w*, τ) of `synthetic_sparse`: y = 1[⟨w*, x⟩ > τ] before label flips.

    w* = ``linear_teacher(d, seed=seed)`` ~ N(0, I_d), and τ is the median of ⟨w*, x⟩ over
    ``calibration_size`` rows drawn like `synthetic_sparse`'s (k = ``nnz_per_sample``
    distinct Zipf columns of value 1/√k) from the calibration stream of ``seed``. The median
    makes the classes balanced up to the calibration error (≈ 0.5/√calibration_size).
    """
    k = _check_int("nnz_per_sample", nnz_per_sample, 1, "each row needs >= 1 nonzero")
    _check_int("calibration_size", calibration_size, 1, "use a few thousand")
    w = linear_teacher(d, seed=seed)
    cols = sample_distinct(
        zipf_probabilities(d, zipf_exponent),
        calibration_size,
        k,
        generator=_generator(seed, _CALIBRATION),
    )
    return w, float((w[cols].sum(1) / math.sqrt(k)).median())


def synthetic_sparse(
    n: int,
    d: int,
    *,
    nnz_per_sample: int = 20,
    zipf_exponent: float = 1.0,
    noise: float = 0.1,
    seed: int = 0,
    teacher: int | Tensor | None = None,
    dense: bool = False,
) -> SparseDataset:
    """Sparse binary classification with Zipf-distributed feature frequencies.

    Row i holds k = ``nnz_per_sample`` distinct columns S_i, drawn by successive sampling
    without replacement from the Zipf law p_j ∝ (j + 1)^(−s) (`zipf_probabilities`,
    `sample_distinct`), each with value 1/√k (so ‖x_i‖ = 1, like the unit-normalised rows of
    LIBSVM text sets). Labels come from a dense Gaussian teacher with a threshold and label
    flips:

        y_i = 1[⟨w*, x_i⟩ > τ] XOR f_i,  ⟨w*, x_i⟩ = Σ_{j ∈ S_i} w*_j / √k,  f_i ~ Bernoulli(noise),

    with (w*, τ) = `sparse_teacher`: w* ~ N(0, I_d) and τ the median margin of the teacher's
    own calibration rows, so the classes are balanced (1/2 up to ≈ 1 %) whatever the seed.
    Without τ the few head features, present in most rows, would shift the positive rate
    far from 1/2 (0.68 for one seed in testing). Given S_i the margin is N(0, 1) over
    teachers, so every feature of a row weighs the same: a rare feature is as informative for
    its rows as a frequent one — the regime in which AdaBatch's per-coordinate averaging
    differs from plain averaging.

    Feature j appears in a row with probability ≈ k·p_j·c (c slightly above 1) while
    k·p_j ≪ 1, a power law of exponent −s; for the head the probability saturates below 1
    (≈ 0.75 for j = 0 with k 10, s 1, d 2000). The cost grows like n·k·log k.

    Args:
        n: number of samples.
        d: number of features.
        nnz_per_sample: k, nonzeros per row, at most d.
        zipf_exponent: s ≥ 0 (0 uniform, 1 classic Zipf).
        noise: label-flip probability in [0, 0.5].
        seed: seed of the samples (supports and flips).
        teacher: seed of (w*, τ); or an explicit ``d`` vector w*, used with τ = 0; or None to
            use ``seed``. Share a seed between a train and a test set.
        dense: passed to `SparseDataset` (whether ``gather`` densifies batches).

    Returns:
        A `SparseDataset`: float32 CSR features with sorted column indices, int64 targets.
    """
    _check_int("n", n, 1, "pass the number of samples to generate")
    _check_int("d", d, 1, "pass the number of features")
    k = _check_int("nnz_per_sample", nnz_per_sample, 1, "each row needs >= 1 nonzero")
    if k > d:
        raise ValueError(f"nnz_per_sample must be <= d, got {k} > {d}; rows hold distinct columns")
    _check_noise(noise)
    p = zipf_probabilities(d, zipf_exponent)
    _check_seed("seed", seed)
    _check_teacher(teacher, Tensor)
    if isinstance(teacher, Tensor):
        w, threshold = _teacher_vector(teacher, seed, d, unit_norm=False), 0.0
    else:
        w, threshold = sparse_teacher(
            d,
            nnz_per_sample=k,
            zipf_exponent=zipf_exponent,
            seed=seed if teacher is None else teacher,
        )
    g = _generator(seed, _SAMPLES)
    cols = sample_distinct(p, n, k, generator=g)
    y = flip_labels(w[cols].sum(1) / math.sqrt(k) > threshold, noise, generator=g).long()
    features = torch.sparse_csr_tensor(
        torch.arange(0, n * k + 1, k),
        cols.flatten(),
        torch.full((n * k,), 1 / math.sqrt(k)),
        size=(n, d),
        check_invariants=False,  # sorted, distinct and in range by construction
    )
    return SparseDataset(features, y, num_classes=2, name="synthetic-sparse", dense=dense)
