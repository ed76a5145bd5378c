"""LIBSVM / svmlight text files as sparse data sets.

One sample per line: ``<label> <index>:<value> <index>:<value> ...`` with increasing indices;
``#`` starts a comment; a ``qid:<n>`` token is allowed and ignored. Files ending in ``.gz`` or
``.bz2`` are decompressed on the fly. Parsing is scikit-learn's ``load_svmlight_file``.

Targets (``task="auto"``):

- labels all in {-1, +1}: binary, -1 → class 0, +1 → class 1 (also when a file holds only one
  of them), ``num_classes=2``;
- labels all in {0, 1}: binary, kept as they are, ``num_classes=2``;
- other integer labels: class i is the i-th smallest label value (so 1, 2, 3 → 0, 1, 2),
  ``num_classes`` the number of distinct values;
- any non-integer label: regression, float32 targets, ``num_classes=None``.

A file alone cannot tell which multiclass labels its split lacks, so a test file could get a
different numbering than its training file; `load_libsvm_named` reads both files of a data set
to number them alike (and to give both the same number of features), and `load_libsvm` takes
``label_values`` for the same purpose.

Named data sets, for each data root ``r`` of `search_roots` in turn, first match wins::

    r/libsvm/<name>[.bz2|.gz]       training split
    r/libsvm/<name>.t[.bz2|.gz]     test split (the LIBSVM site's naming, e.g. a9a and a9a.t)
"""

from __future__ import annotations

import bz2
import gzip
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

import torch

from ..errors import DatasetFormatError, DatasetNotFoundError
from ._optional import require
from .base import SparseDataset
from .paths import search_roots

__all__ = ["libsvm_label_values", "load_libsvm", "load_libsvm_named"]

_COMPRESSED = (".bz2", ".gz")
_READ_ERRORS = (ValueError, EOFError, zlib.error, OSError)
_LINE_FORMAT = "LIBSVM lines '<label> <index>:<value> ...' with increasing indices"

Task = Literal["auto", "classification", "regression"]


def _open_text(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return path.open("rb")


def _line_problem(line: bytes) -> str | None:
    """Why one line is not a valid LIBSVM line, or None if it is."""
    tokens = line.split(b"#", 1)[0].split()
    if not tokens:
        return None
    try:
        float(tokens[0])
    except ValueError:
        return f"label {tokens[0].decode(errors='replace')!r} is not a number"
    previous = -1
    for token in tokens[1:]:
        index, sep, value = token.partition(b":")
        text = token.decode(errors="replace")
        if not sep:
            return f"token {text!r} is not <index>:<value>"
        if index == b"qid":
            continue
        try:
            i, _ = int(index), float(value)
        except ValueError:
            return f"token {text!r} is not <index>:<value>"
        if i < 0 or i <= previous:
            return f"index in {text!r} is negative or not greater than the one before"
        previous = i
    return None


def _find_bad_line(path: Path) -> str | None:
    """``"line N: <what is wrong> in '<line>'"`` for the first invalid line, else None."""
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                problem = _line_problem(line)
                if problem is not None:
                    shown = line.decode(errors="replace").rstrip()[:80]
                    return f"line {number}: {problem} in {shown!r}"
    except _READ_ERRORS as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def _format_error(path: Path, exc: BaseException) -> DatasetFormatError:
    where = _find_bad_line(path)
    found = where or f"{type(exc).__name__}: {exc}"
    return DatasetFormatError(path, _LINE_FORMAT, found)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"LIBSVM file {path} does not exist")


def libsvm_label_values(labels: Any, task: Task = "auto") -> list[float] | None:
    """The label value of each class, in class order, or None for regression.

    Implements the rule in the module docstring.

    Args:
        labels: the raw labels of a file (a float array, as scikit-learn returns them).
        task: ``"auto"`` decides from the values; ``"classification"`` forces classes even for
            non-integer labels; ``"regression"`` forces regression (e.g. for integer ages).

    Returns:
        The sorted class label values (e.g. ``[-1.0, 1.0]``), or None for regression.
    """
    np = require("numpy", "reading LIBSVM files")
    if task not in ("auto", "classification", "regression"):
        raise ValueError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    if task == "regression":
        return None
    values = np.unique(np.asarray(labels, dtype=np.float64))
    integer = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if task == "auto" and not integer:
        return None
    if set(values.tolist()) <= {-1.0, 1.0}:
        return [-1.0, 1.0]
    if set(values.tolist()) <= {0.0, 1.0}:
        return [0.0, 1.0]
    return [float(v) for v in values]


def _targets(labels: Any, label_values: Sequence[float] | None, path: Path) -> torch.Tensor:
    """Class indices of ``labels`` under ``label_values`` (float32 values if None)."""
    np = require("numpy", "reading LIBSVM files")
    if label_values is None:
        return torch.from_numpy(np.asarray(labels, dtype=np.float32))
    values = np.asarray(label_values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    position = np.clip(np.searchsorted(ranked, labels), 0, len(ranked) - 1)
    unknown = np.flatnonzero(ranked[position] != labels)
    if unknown.size:
        i = int(unknown[0])
        raise DatasetFormatError(
            path,
            f"labels among {list(label_values)}",
            f"label {labels[i]:g} (sample {i}, counting from 0)",
        )
    return torch.from_numpy(order[position].astype(np.int64))


def _to_dataset(
    matrix: Any,
    labels: Any,
    path: Path,
    label_values: Sequence[float] | None,
    dense: bool,
    name: str,
) -> SparseDataset:
    np = require("numpy", "reading LIBSVM files")
    matrix.sort_indices()  # CSR invariant expected by torch; already true for valid files
    with warnings.catch_warnings():
        # torch's one-time notice that sparse CSR is "beta" is not the user's concern here.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        features = torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32, copy=False)),
            size=tuple(matrix.shape),
            check_invariants=False,  # scipy built it and sort_indices made it canonical
        )
    return SparseDataset(
        features,
        _targets(labels, label_values, path),
        num_classes=None if label_values is None else len(label_values),
        name=name,
        dense=dense,
    )


def _default_name(path: Path) -> str:
    return path.stem if path.suffix in _COMPRESSED else path.name


def load_libsvm(
    path: str | os.PathLike[str],
    *,
    n_features: int | None = None,
    dense: bool = False,
    zero_based: bool | Literal["auto"] = "auto",
    task: Task = "auto",
    label_values: Sequence[float] | None = None,
    name: str | None = None,
) -> SparseDataset:
    """Load one LIBSVM / svmlight file as a `SparseDataset`.

    See the module docstring for the format and how labels become targets.

    Args:
        path: the file; ``.gz`` and ``.bz2`` files are decompressed.
        n_features: the number of feature columns; default: the largest index in the file
            (pass the training file's count when loading a test file alone).
        dense: whether the dataset's ``gather`` returns dense batches.
        zero_based: whether indices start at 0; ``"auto"`` assumes 1-based unless a 0 occurs.
        task: ``"auto"``, ``"classification"`` or ``"regression"`` (see
            `libsvm_label_values`).
        label_values: the label value of each class in class order (e.g. the training file's
            ``[1, 2, 3, 5]``); overrides ``task``. A label not in it is a DatasetFormatError.
        name: the dataset's name; default: the file name without ``.gz`` / ``.bz2``.

    Returns:
        A `SparseDataset` with ``N × n_features`` float32 CSR features and int64 class targets
        (``num_classes`` set) or float32 regression targets (``num_classes=None``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DatasetFormatError: a malformed line (the message names the file and the line), a
            corrupted compressed file, or a label outside ``label_values``.
    """
    sklearn_datasets = require("sklearn.datasets", "reading LIBSVM files")
    np = require("numpy", "reading LIBSVM files")
    path = Path(path)
    _check_file(path)
    try:
        matrix, labels = sklearn_datasets.load_svmlight_file(
            str(path), n_features=n_features, dtype=np.float32, zero_based=zero_based
        )
    except _READ_ERRORS as exc:
        raise _format_error(path, exc) from exc
    if label_values is None:
        label_values = libsvm_label_values(labels, task)
    return _to_dataset(
        matrix, labels, path, label_values, dense, _default_name(path) if name is None else name
    )


def _find_named(directory: Path, base: str) -> Path | None:
    for suffix in ("", *_COMPRESSED):
        candidate = directory / f"{base}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _locate_named(name: str, wanted: str, root: str | os.PathLike[str] | None) -> Path:
    """The file ``wanted`` (possibly compressed) in the first ``<root>/libsvm/`` holding it."""
    searched: list[Path] = []
    for r in search_roots(root):
        directory = r / "libsvm"
        searched.append(directory)
        path = _find_named(directory, wanted)
        if path is not None:
            return path
    raise DatasetNotFoundError(
        name,
        searched,
        f"run `adabatch data fetch {name}` or put the file {wanted} (or {wanted}.bz2) from the "
        f"LIBSVM data page in {searched[0]}",
    )


def load_libsvm_named(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    split: Literal["train", "test"] = "train",
    dense: bool = False,
    zero_based: bool | Literal["auto"] = "auto",
    task: Task = "auto",
) -> SparseDataset:
    """Load a LIBSVM data set by name from the data roots (``<root>/libsvm/<name>[.t]``).

    When both the training and the test file are there, both are parsed (the other one only
    to agree on it), so that the two splits get the same number of features, the same index
    base and the same class numbering.

    Args:
        name: the file name of the training split as on the LIBSVM site, e.g. ``"a9a"``.
        root: a data root searched before ``$ADABATCH_DATA`` and the default cache.
        split: ``"train"`` (``<name>``) or ``"test"`` (``<name>.t``).
        dense: whether the dataset's ``gather`` returns dense batches.
        zero_based: whether indices start at 0; ``"auto"`` decides from both files.
        task: ``"auto"``, ``"classification"`` or ``"regression"`` (see
            `libsvm_label_values`).

    Returns:
        A `SparseDataset` named ``"<name>/<split>"`` (see `load_libsvm`).

    Raises:
        ValueError: ``split`` is neither ``"train"`` nor ``"test"``, or ``name`` has a directory.
        DatasetNotFoundError: no root holds the split's file.
        DatasetFormatError: as for `load_libsvm`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(
            f"name must be a file name such as 'a9a', without a directory, got {name!r}"
        )
    sklearn_datasets = require("sklearn.datasets", "reading LIBSVM files")
    np = require("numpy", "reading LIBSVM files")
    wanted = name if split == "train" else f"{name}.t"
    path = _locate_named(name, wanted, root)
    partner = _find_named(path.parent, f"{name}.t" if split == "train" else name)
    files = [path] if partner is None else [path, partner]
    try:
        loaded = sklearn_datasets.load_svmlight_files(
            [str(f) for f in files], dtype=np.float32, zero_based=zero_based
        )
    except _READ_ERRORS as exc:
        # Name the file that is broken: the first one whose lines do not parse.
        culprit = next((f for f in files if _find_bad_line(f) is not None), path)
        raise _format_error(culprit, exc) from exc
    matrix, labels = loaded[0], loaded[1]
    all_labels = labels if partner is None else np.concatenate([labels, loaded[3]])
    label_values = libsvm_label_values(all_labels, task)
    return _to_dataset(matrix, labels, path, label_values, dense, f"{name}/{split}")
