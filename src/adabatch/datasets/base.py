"""In-memory data sets whose batches are gathered with one index operation.

`ArrayDataset` (dense inputs) and `SparseDataset` (CSR rows) are ordinary map-style
``torch.utils.data.Dataset`` objects — ``dataset[i]`` returns one ``(input, target)`` pair, so
they work with any ``DataLoader`` — and they also implement ``gather(indices)``, which returns
a whole batch from one index tensor. `adabatch.data.AdaptiveLoader` uses ``gather`` when it is
there (the tensor fast path) instead of ``len(batch)`` calls to ``__getitem__`` and a collate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from ..data.rows import gather_csr_rows, take_rows  # re-exported: the data sets' gathers

__all__ = ["ArrayDataset", "SparseDataset", "gather_csr_rows", "take_rows"]


class ArrayDataset(TensorDataset):
    """Inputs and targets held as two tensors with the sample as the first dimension.

    Args:
        inputs: ``N × ...`` tensor (images are ``N × C × H × W``).
        targets: ``N`` tensor of class indices (int64) or regression targets.
        num_classes: number of classes for classification data, else None.
        name: the data set's name and split, for messages and run records.
        classes: optional human-readable class names (length ``num_classes``).
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        *,
        num_classes: int | None = None,
        name: str = "",
        classes: Sequence[str] | None = None,
    ) -> None:
        if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                "inputs and targets must have the same first dimension (one row per sample), "
                f"got inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}"
            )
        if classes is not None and num_classes is not None and len(classes) != num_classes:
            raise ValueError(f"got {len(classes)} class names for num_classes={num_classes}")
        super().__init__(inputs, targets)
        self.num_classes = num_classes
        self.name = name
        self.classes = list(classes) if classes is not None else None

    @property
    def inputs(self) -> Tensor:
        """The ``N × ...`` input tensor."""
        return self.tensors[0]

    @property
    def targets(self) -> Tensor:
        """The ``N`` target tensor."""
        return self.tensors[1]

    def gather(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The batch ``(inputs[indices], targets[indices])`` from one int64 index tensor."""
        return take_rows(self.tensors[0], indices), take_rows(self.tensors[1], indices)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, "
            f"inputs={tuple(self.inputs.shape[1:])} {self.inputs.dtype}, "
            f"num_classes={self.num_classes})"
        )


class SparseDataset(Dataset[tuple[Tensor, Tensor]]):
    """Sparse feature rows (a ``N × d`` CSR matrix) and their targets.

    ``dataset[i]`` returns a *dense* feature row (so the default collate works);
    ``gather(indices)`` returns a ``b × d`` sparse CSR batch (``dense=False``) or a dense one.

    Args:
        features: ``N × d`` tensor in ``torch.sparse_csr`` layout (or any layout convertible
            with ``to_sparse_csr``).
        targets: ``N`` targets.
        num_classes: number of classes for classification data, else None.
        name: the data set's name and split.
        dense: whether ``gather`` returns dense batches.
    """

    def __init__(
        self,
        features: Tensor,
        targets: Tensor,
        *,
        num_classes: int | None = None,
        name: str = "",
        dense: bool = False,
    ) -> None:
        if features.dim() != 2 or targets.dim() == 0 or features.shape[0] != targets.shape[0]:
            raise ValueError(
                "features must be an N × d matrix and targets have N rows, got features "
                f"{tuple(features.shape)} and targets {tuple(targets.shape)}"
            )
        if features.layout != torch.sparse_csr:
            features = features.to_sparse_csr()
        self.features = features
        self.targets = targets
        self.num_classes = num_classes
        self.name = name
        self.dense = dense

    @property
    def num_features(self) -> int:
        """d, the number of feature columns."""
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        row = gather_csr_rows(self.features, torch.tensor([index])).to_dense()[0]
        return row, self.targets[index]

    def gather(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The batch of rows ``indices``: CSR (or dense if ``self.dense``) and targets."""
        rows = gather_csr_rows(self.features, indices)
        return (rows.to_dense() if self.dense else rows), take_rows(self.targets, indices)

    def __repr__(self) -> str:
        nnz = int(self.features.values().numel())
        return (
            f"SparseDataset(name={self.name!r}, n={len(self)}, d={self.num_features}, "
            f"nnz={nnz}, num_classes={self.num_classes})"
        )
