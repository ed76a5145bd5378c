"""Bridge from the torch data sets of `adabatch.datasets` to the scipy/numpy sparse solvers.

The solvers of `adabatch.sparse` work on a ``scipy.sparse`` CSR matrix and a numpy label
vector; `adabatch.datasets.SparseDataset` holds a torch CSR tensor. `to_scipy` converts one
into the other without densifying.
"""

from __future__ import annotations

from . import _numpy_scipy  # noqa: F401  (first: numpy and scipy, or how to install them)

# isort: split

from typing import Any

import numpy as np

__all__ = ["csr_from_torch", "to_scipy"]


def csr_from_torch(tensor: Any) -> Any:
    """A 2-d torch tensor in the ``sparse_csr`` layout as a ``scipy.sparse.csr_matrix``.

    The arrays are copied (no aliasing of the tensor); float32/float64 values keep their dtype,
    other dtypes become float64.
    """
    import scipy.sparse as sp

    tensor = tensor.detach().cpu()
    values = tensor.values().numpy()
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    return sp.csr_matrix(
        (
            np.array(values, copy=True),
            np.array(tensor.col_indices().numpy(), copy=True),
            np.array(tensor.crow_indices().numpy(), copy=True),
        ),
        shape=tuple(int(s) for s in tensor.shape),
    )


def to_scipy(dataset: Any) -> tuple[Any, np.ndarray]:
    """The features of a `SparseDataset` as a scipy CSR matrix, and its targets as numpy.

    The values keep their dtype when it is float32 or float64 (other dtypes become float64);
    the arrays are copied, so the result does not alias the data set's tensors.

    Args:
        dataset: a `adabatch.datasets.SparseDataset` (anything with a torch ``features``
            tensor in ``sparse_csr`` layout, or convertible to it, and a 1-d ``targets``).

    Returns:
        ``(X, y)``: X an ``n × d`` ``scipy.sparse.csr_matrix``, y the ``n`` targets (dtype as
        stored, e.g. int64 0/1 labels; the solvers map them with `signed_labels`).

    Raises:
        TypeError: ``dataset`` has no torch ``features``/``targets`` tensors.
        ValueError: targets that are not one per row.
    """
    import torch

    features = getattr(dataset, "features", None)
    targets = getattr(dataset, "targets", None)
    if not (isinstance(features, torch.Tensor) and isinstance(targets, torch.Tensor)):
        raise TypeError(
            "to_scipy needs a SparseDataset (torch `features` and `targets` tensors), got "
            f"{type(dataset).__name__}; build one with adabatch.datasets.SparseDataset or "
            "a generator such as synthetic_sparse"
        )
    if features.dim() != 2:
        raise ValueError(f"features must be an n × d matrix, got shape {tuple(features.shape)}")
    if features.layout != torch.sparse_csr:
        features = features.to_sparse_csr()
    X = csr_from_torch(features)
    n = X.shape[0]
    y = np.array(targets.detach().cpu().numpy(), copy=True)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"targets must hold one value per row: expected shape ({n},), got {y.shape}"
        )
    return X, y
