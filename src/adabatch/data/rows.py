"""Gathering rows of batch-first tensors: dense ones by ``index_select``, sparse CSR ones as CSR."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gather_csr_rows", "take_rows"]


def take_rows(tensor: Tensor, indices: Tensor) -> Tensor:
    """``tensor[indices]`` along the first dimension, by ``index_select``.

    Same result as advanced indexing, but on CPU ``tensor[indices]`` of an ``N × C × H × W``
    tensor goes through the general N-d indexing kernel, orders of magnitude slower for small
    batches (see BENCHMARKS.md, loader throughput).
    """
    return tensor.index_select(0, indices)


def gather_csr_rows(matrix: Tensor, indices: Tensor) -> Tensor:
    """Rows ``indices`` of a sparse CSR matrix, as a new CSR matrix, without densifying.

    Vectorised: row r of the result takes the slice ``crow[i]:crow[i+1]`` of the column and
    value arrays of source row i = indices[r]; the slices are concatenated by building the
    flat positions with one ``repeat_interleave``.
    """
    crow = matrix.crow_indices()
    starts = crow[indices]
    lengths = crow[indices + 1] - starts
    new_crow = torch.zeros(len(indices) + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(lengths, 0, out=new_crow[1:])
    total = int(new_crow[-1])
    # Position k of the output comes from source position starts[row(k)] + (k - new_crow[row(k)]).
    offsets = torch.repeat_interleave(starts - new_crow[:-1], lengths, output_size=total)
    positions = torch.arange(total, dtype=crow.dtype, device=crow.device) + offsets
    return torch.sparse_csr_tensor(
        new_crow,
        matrix.col_indices()[positions],
        matrix.values()[positions],
        size=(len(indices), matrix.shape[1]),
        check_invariants=False,  # built from a valid matrix; the check costs a pass over it
    )
