"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches.

Layout, for each data root ``r`` of `search_roots` in turn, first match wins::

    r/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    r/cifar-100-python/train, test, meta

Each batch is a pickled dict with bytes keys: ``b"data"``, a uint8 array of ``N × 3072``
(the 1024 red, then green, then blue values of a 32 × 32 image, rows top to bottom), and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` and ``b"coarse_labels"`` (CIFAR-100), lists of
N ints. The meta file holds the class names (``b"label_names"``, resp. ``b"fine_label_names"``
and ``b"coarse_label_names"``); it is optional — without it the dataset has no class names.

The files are unpickled with an allow-list (numpy array reconstruction only): a batch that
names any other callable is refused, never executed.

If a root has no extracted directory but holds the original archive
(``r/cifar-10-python.tar.gz`` resp. ``r/cifar-100-python.tar.gz``), the archive is extracted
into ``r`` first, all or nothing (into a temporary directory, then renamed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import DatasetFormatError, DatasetNotFoundError
from ._archive import extract_directory
from ._optional import require
from ._safe_pickle import safe_load
from .base import ArrayDataset
from .paths import search_roots

__all__ = ["load_cifar10", "load_cifar100"]

_SIDE = 32
_ROW = 3 * _SIDE * _SIDE


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant's files are and what is in them."""

    name: str  # as in `adabatch data fetch NAME`
    directory: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str


_CIFAR10 = _Layout(
    "cifar10",
    "cifar-10-batches-py",
    "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
)
_CIFAR100 = _Layout(
    "cifar100", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), "meta"
)


def _locate(layout: _Layout, files: Sequence[str], root: str | os.PathLike[str] | None) -> Path:
    """The first directory holding ``files``, extracting the archive where only it is there."""
    searched: list[Path] = []
    partial: list[str] = []
    for r in search_roots(root):
        directory = r / layout.directory
        searched.append(directory)
        if directory.is_dir():
            missing = [f for f in files if not (directory / f).is_file()]
            if not missing:
                return directory
            partial.append(f"{directory} lacks {', '.join(missing)}")
        elif (r / layout.archive).is_file():
            return extract_directory(r / layout.archive, layout.directory, r)
    first = search_roots(root)[0]
    hint = (
        f"run `adabatch data fetch {layout.name}`, or put {layout.archive} or its extracted "
        f"{layout.directory}/ directory in {first}"
    )
    if partial:
        hint = "incomplete: " + "; ".join(partial) + "\n" + hint
    raise DatasetNotFoundError(layout.name, searched, hint)


def _get(batch: dict[Any, Any], key: str, path: Path) -> Any:
    # The original files (Python 2) have bytes keys; a batch re-saved by Python 3 has str keys.
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    present = ", ".join(repr(k) for k in list(batch)[:10])
    raise DatasetFormatError(path, f"the key b{key!r}", f"only the keys {present}")


def _load_dict(path: Path) -> dict[Any, Any]:
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise DatasetFormatError(path, "a pickled dict", f"a pickled {type(batch).__name__}")
    return batch


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[Any, Any]:
    """The ``N × 3072`` uint8 array and ``N`` int64 labels of one batch file, checked."""
    np = require("numpy", "reading CIFAR")
    batch = _load_dict(path)
    data = _get(batch, "data", path)
    labels = _get(batch, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        found = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DatasetFormatError(path, f"b'data' as a uint8 array of N × {_ROW}", found)
    if data.shape[1] != _ROW:
        raise DatasetFormatError(
            path, f"b'data' as a uint8 array of N × {_ROW}", f"shape {data.shape}"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(path, f"b{label_key!r} as a list of ints", str(exc)) from exc
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(
            path,
            f"{data.shape[0]} labels in b{label_key!r}, one per image",
            f"shape {labels.shape}",
        )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DatasetFormatError(
            path,
            f"labels in 0..{num_classes - 1} in b{label_key!r}",
            f"{int(labels[bad[0]])} at index {int(bad[0])}",
        )
    return data, labels


def _read_names(path: Path, key: str, num_classes: int) -> list[str] | None:
    """The class names in a meta file, or None if there is no meta file."""
    if not path.is_file():
        return None
    names = _get(_load_dict(path), key, path)
    if not isinstance(names, list) or len(names) != num_classes:
        found = f"{len(names)} names" if isinstance(names, list) else type(names).__name__
        raise DatasetFormatError(path, f"a list of {num_classes} class names in b{key!r}", found)
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _load(
    layout: _Layout,
    root: str | os.PathLike[str] | None,
    train: bool,
    label_key: str,
    names_key: str,
    num_classes: int,
    name: str,
) -> ArrayDataset:
    np = require("numpy", "reading CIFAR")
    files = layout.train_files if train else layout.test_files
    directory = _locate(layout, files, root)
    parts = [_read_batch(directory / f, label_key, num_classes) for f in files]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    classes = _read_names(directory / layout.meta_file, names_key, num_classes)
    inputs = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, _SIDE, _SIDE)
    return ArrayDataset(
        inputs.to(torch.float32).div_(255.0),
        torch.from_numpy(labels),
        num_classes=num_classes,
        name=f"{name}/{'train' if train else 'test'}",
        classes=classes,
    )


def load_cifar10(root: str | os.PathLike[str] | None = None, *, train: bool = True) -> ArrayDataset:
    """Load CIFAR-10 (one split) from ``cifar-10-batches-py/``.

    See the module docstring for the file layout, the archive fallback and the safety of
    unpickling.

    Args:
        root: a data root searched before ``$ADABATCH_DATA`` and the default cache.
        train: the 50000 images of ``data_batch_1..5`` (True) or the 10000 of ``test_batch``.

    Returns:
        An `ArrayDataset` named ``"cifar10/train"`` or ``"cifar10/test"``: inputs float32 in
        [0, 1] of shape ``N × 3 × 32 × 32``, targets int64 in 0..9, ``num_classes=10``, class
        names from ``batches.meta`` when present.

    Raises:
        DatasetNotFoundError: no root holds the split's files or the archive.
        DatasetFormatError: a file is truncated, corrupted, not a dict of the expected keys and
            shapes, has labels out of range, or names a forbidden callable. The message names
            the file.
    """
    return _load(_CIFAR10, root, train, "labels", "label_names", 10, "cifar10")


def load_cifar100(
    root: str | os.PathLike[str] | None = None,
    *,
    train: bool = True,
    labels: Literal["fine", "coarse"] = "fine",
) -> ArrayDataset:
    """Load CIFAR-100 (one split) from ``cifar-100-python/``.

    See the module docstring for the file layout, the archive fallback and the safety of
    unpickling.

    Args:
        root: a data root searched before ``$ADABATCH_DATA`` and the default cache.
        train: the 50000 images of ``train`` (True) or the 10000 of ``test``.
        labels: ``"fine"`` (100 classes) or ``"coarse"`` (the 20 superclasses).

    Returns:
        An `ArrayDataset` named ``"cifar100/train"`` (``"cifar100-coarse/..."`` for the coarse
        labels): inputs float32 in [0, 1] of shape ``N × 3 × 32 × 32``, targets int64,
        ``num_classes`` 100 or 20, class names from ``meta`` when present.

    Raises:
        ValueError: ``labels`` is neither ``"fine"`` nor ``"coarse"``.
        DatasetNotFoundError: no root holds the split's file or the archive.
        DatasetFormatError: as for `load_cifar10`.
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    num_classes = 100 if labels == "fine" else 20
    name = "cifar100" if labels == "fine" else "cifar100-coarse"
    return _load(
        _CIFAR100,
        root,
        train,
        f"{labels}_labels",
        f"{labels}_label_names",
        num_classes,
        name,
    )
