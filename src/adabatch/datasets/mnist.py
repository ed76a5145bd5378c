"""MNIST and Fashion-MNIST from their four IDX files.

Layout, for each data root ``r`` of `search_roots` (``--dir``, ``$ADABATCH_DATA``, the default
cache) in turn, first match wins::

    r/mnist/train-images-idx3-ubyte[.gz]      r/fashion-mnist/train-images-idx3-ubyte[.gz]
    r/mnist/train-labels-idx1-ubyte[.gz]      r/fashion-mnist/train-labels-idx1-ubyte[.gz]
    r/mnist/t10k-images-idx3-ubyte[.gz]       r/fashion-mnist/t10k-images-idx3-ubyte[.gz]
    r/mnist/t10k-labels-idx1-ubyte[.gz]       r/fashion-mnist/t10k-labels-idx1-ubyte[.gz]

The files may also sit in a ``raw/`` sub-directory (``r/mnist/raw/...``, the layout other tools
download to); ``r/mnist/`` itself is looked at first. A directory is used when it holds both
files of the requested split, each plain or gzip-compressed (the plain one is preferred when
both are there). Only the requested split's files are needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from ..errors import DatasetFormatError, DatasetNotFoundError
from .base import ArrayDataset
from .idx import read_idx
from .paths import search_roots

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "load_mnist", "mnist_files"]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
_PREFIX = {True: "train", False: "t10k"}
_SIDE = 28


def mnist_files(train: bool) -> tuple[str, str]:
    """The (images, labels) file names of a split, without the optional ``.gz``."""
    prefix = _PREFIX[train]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(kind: str, train: bool, root: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """The images and labels files of the split, from the first directory that has both."""
    names = mnist_files(train)
    searched: list[Path] = []
    partial: list[str] = []
    for r in search_roots(root):
        base = r / kind
        for directory in (base, base / "raw"):
            searched.append(directory)
            found = [_find(directory, n) for n in names]
            if found[0] is not None and found[1] is not None:
                return found[0], found[1]
            if found[0] is not None or found[1] is not None:
                missing = names[1] if found[0] is not None else names[0]
                partial.append(f"{directory} lacks {missing}[.gz]")
    first = search_roots(root)[0] / kind
    hint = (
        f"run `adabatch data fetch {kind}` or put the files {names[0]}[.gz] and "
        f"{names[1]}[.gz] in {first}"
    )
    if partial:
        hint = "incomplete: " + "; ".join(partial) + "\n" + hint
    raise DatasetNotFoundError(kind, searched, hint)


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    train: bool = True,
    kind: Literal["mnist", "fashion-mnist"] = "mnist",
) -> ArrayDataset:
    """Load MNIST or Fashion-MNIST (one split) from its IDX files.

    See the module docstring for where the files are looked for.

    Args:
        root: a data root searched before ``$ADABATCH_DATA`` and the default cache.
        train: the 60000-image training split (True) or the 10000-image test split (False).
        kind: ``"mnist"`` (digits) or ``"fashion-mnist"`` (Zalando's clothing images).

    Returns:
        An `ArrayDataset` named ``"<kind>/train"`` or ``"<kind>/test"``: inputs float32 in
        [0, 1] of shape ``N × 1 × 28 × 28``, targets int64 in 0..9, ``num_classes=10`` and the
        class names.

    Raises:
        ValueError: ``kind`` is not one of the two names.
        DatasetNotFoundError: no searched directory holds both files of the split.
        DatasetFormatError: a file is not valid IDX, the images are not ``N × 28 × 28`` uint8,
            the labels not ``N`` uint8 in 0..9, or the two counts differ.
    """
    if kind not in _CLASSES:
        raise ValueError(f"kind must be 'mnist' or 'fashion-mnist', got {kind!r}")
    images_path, labels_path = _locate(kind, train, root)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3 or images.shape[1:] != (_SIDE, _SIDE):
        raise DatasetFormatError(
            images_path,
            f"uint8 images of shape N × {_SIDE} × {_SIDE}",
            f"{images.dtype} of shape {tuple(images.shape)}",
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise DatasetFormatError(
            labels_path, "uint8 labels of shape N", f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    if len(labels) != len(images):
        raise DatasetFormatError(
            labels_path,
            f"{len(images)} labels, one per image of {images_path.name}",
            f"{len(labels)} labels (the two files are from different downloads?)",
        )
    if len(labels) and int(labels.max()) >= 10:
        bad = int((labels >= 10).nonzero()[0, 0])
        raise DatasetFormatError(
            labels_path, "labels in 0..9", f"label {int(labels[bad])} at index {bad}"
        )
    inputs = images.unsqueeze(1).to(torch.float32).div_(255.0)
    split = "train" if train else "test"
    return ArrayDataset(
        inputs,
        labels.to(torch.int64),
        num_classes=10,
        name=f"{kind}/{split}",
        classes=_CLASSES[kind],
    )
