r"""Tiny-ImageNet (200 classes of 64 × 64 colour images) from its extracted directory.

Layout, for each data root ``r`` of `search_roots` in turn, first match wins::

    r/tiny-imagenet-200/wnids.txt                    one WordNet id per line; line i = class i
    r/tiny-imagenet-200/words.txt                    optional: "<wnid>\t<names>" per line
    r/tiny-imagenet-200/train/<wnid>/images/*.JPEG   500 training images per class
    r/tiny-imagenet-200/val/images/*.JPEG            10000 validation images
    r/tiny-imagenet-200/val/val_annotations.txt      "<file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1>"

The ``test/`` images have no labels and are not loaded. A root is used when it has
``wnids.txt`` and the requested split (``train/``, resp. ``val/val_annotations.txt``).

Order of the samples: training images class by class in ``wnids.txt`` order, by file name
within a class; validation images in the order of ``val_annotations.txt`` (images in
``val/images`` that the annotations do not list are not loaded).

Memory: the images are kept as uint8 by default (the 100000 training images take 1.2 GB; as
float32 they would take 4.9 GB). Such inputs must be scaled to [0, 1] by the consumer
(``x.float().div_(255)`` on each batch); pass ``dtype=torch.float32`` to get them scaled here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import DatasetFormatError, DatasetNotFoundError
from ._optional import require
from .base import ArrayDataset
from .paths import search_roots

__all__ = ["load_tiny_imagenet"]

_DIRECTORY = "tiny-imagenet-200"
_SIDE = 64
_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _locate(split: str, root: str | os.PathLike[str] | None) -> Path:
    marker = "train" if split == "train" else "val/val_annotations.txt"
    searched: list[Path] = []
    partial: list[str] = []
    for r in search_roots(root):
        directory = r / _DIRECTORY
        searched.append(directory)
        if not directory.is_dir():
            continue
        missing = [m for m in ("wnids.txt", marker) if not (directory / m).exists()]
        if not missing:
            return directory
        partial.append(f"{directory} lacks {', '.join(missing)}")
    first = search_roots(root)[0]
    hint = (
        "run `adabatch data fetch tiny-imagenet`, or extract tiny-imagenet-200.zip into "
        f"{first} (giving {first / _DIRECTORY}/wnids.txt, train/, val/)"
    )
    if partial:
        hint = "incomplete: " + "; ".join(partial) + "\n" + hint
    raise DatasetNotFoundError("tiny-imagenet", searched, hint)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, "a UTF-8 text file", f"undecodable bytes ({exc})") from exc
    return [line.strip() for line in text.splitlines()]


def _read_wnids(path: Path) -> list[str]:
    wnids = [line for line in _read_lines(path) if line]
    if not wnids:
        raise DatasetFormatError(path, "one WordNet id per line (200 lines)", "an empty file")
    seen: set[str] = set()
    for i, wnid in enumerate(wnids):
        if wnid in seen:
            raise DatasetFormatError(
                path, "distinct WordNet ids", f"{wnid!r} again at line {i + 1}"
            )
        seen.add(wnid)
    return wnids


def _read_words(path: Path, wnids: list[str]) -> list[str]:
    """Class names from ``words.txt`` (the wnids themselves where it is absent)."""
    if not path.is_file():
        return list(wnids)
    words: dict[str, str] = {}
    for line in _read_lines(path):
        wnid, _, names = line.partition("\t")
        if names:
            words[wnid] = names.strip()
    return [words.get(w, w) for w in wnids]


def _train_files(
    directory: Path, wnids: list[str], max_per_class: int | None
) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for index, wnid in enumerate(wnids):
        images = directory / "train" / wnid / "images"
        if not images.is_dir():
            raise DatasetFormatError(
                images,
                f"a directory of training images for class {wnid} (listed in wnids.txt)",
                "no such directory (incomplete extraction?)",
            )
        names = sorted(
            p for p in images.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()
        )
        names = names[:max_per_class] if max_per_class is not None else names
        files += names
        labels += [index] * len(names)
    return files, labels


def _val_files(
    directory: Path, wnids: list[str], max_per_class: int | None
) -> tuple[list[Path], list[int]]:
    annotations = directory / "val" / "val_annotations.txt"
    index = {w: i for i, w in enumerate(wnids)}
    counts = [0] * len(wnids)
    files: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(_read_lines(annotations), start=1):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetFormatError(
                annotations,
                "tab-separated lines '<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>'",
                f"line {number}: {line[:80]!r}",
            )
        name, wnid = fields[0], fields[1]
        if wnid not in index:
            raise DatasetFormatError(
                annotations,
                f"WordNet ids listed in {directory / 'wnids.txt'}",
                f"unknown id {wnid!r} at line {number}",
            )
        label = index[wnid]
        if max_per_class is not None and counts[label] >= max_per_class:
            continue
        path = directory / "val" / "images" / name
        if not path.is_file():
            raise DatasetFormatError(
                path, f"the image listed at line {number} of {annotations}", "no such file"
            )
        counts[label] += 1
        files.append(path)
        labels.append(label)
    return files, labels


def _decode(image_module: Any, np: Any, path: Path) -> Any:
    """One image file as a ``64 × 64 × 3`` uint8 array (grayscale images made RGB)."""
    try:
        with image_module.open(path) as img:
            if img.size != (_SIDE, _SIDE):
                raise DatasetFormatError(
                    path, f"a {_SIDE}×{_SIDE} image", f"{img.size[0]}×{img.size[1]}"
                )
            array = np.array(img.convert("RGB"))  # convert() decodes; np.array: a writable copy
    except DatasetFormatError:
        raise
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as exc:
        # Pillow reports unknown formats and truncated data as OSError subclasses.
        raise DatasetFormatError(
            path, "a readable JPEG image", f"{type(exc).__name__}: {exc}"
        ) from exc
    return array


def _decode_all(files: list[Path]) -> Tensor:
    """All images as one ``N × 3 × 64 × 64`` uint8 tensor, decoded by a few threads."""
    np = require("numpy", "reading Tiny-ImageNet")
    image_module = require("PIL.Image", "reading Tiny-ImageNet")
    out = torch.empty((len(files), 3, _SIDE, _SIDE), dtype=torch.uint8)

    def fill(i: int) -> None:
        out[i] = torch.from_numpy(_decode(image_module, np, files[i])).permute(2, 0, 1)

    # Pillow releases the GIL while decoding, so threads do help; each writes its own row.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for _ in pool.map(fill, range(len(files))):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def load_tiny_imagenet(
    root: str | os.PathLike[str] | None = None,
    *,
    split: Literal["train", "val"] = "train",
    dtype: torch.dtype = torch.uint8,
    max_per_class: int | None = None,
) -> ArrayDataset:
    """Load Tiny-ImageNet's training or validation split, decoding the JPEG files.

    See the module docstring for the layout, the sample order and the memory use.

    Args:
        root: a data root searched before ``$ADABATCH_DATA`` and the default cache.
        split: ``"train"`` (100000 images) or ``"val"`` (10000 images, labelled).
        dtype: ``torch.uint8`` (default: the pixel values 0..255, a quarter of the memory) or
            a floating dtype (values scaled to [0, 1]).
        max_per_class: keep at most this many images of each class (the first by file name,
            resp. annotation order), for quick runs; None keeps all.

    Returns:
        An `ArrayDataset` named ``"tiny-imagenet/train"`` or ``"tiny-imagenet/val"``: inputs
        of shape ``N × 3 × 64 × 64`` and ``dtype``, targets int64 (class i = line i of
        ``wnids.txt``), ``num_classes`` the number of wnids (200), class names from
        ``words.txt`` (the wnids where it is missing).

    Raises:
        ValueError: a bad ``split``, ``dtype`` or ``max_per_class``.
        DatasetNotFoundError: no root holds the directory with ``wnids.txt`` and the split.
        DatasetFormatError: a class directory or a listed image is missing, an annotation names
            an unknown wnid, an image is unreadable or not 64 × 64. The message names the file.
    """
    if split not in ("train", "val"):
        raise ValueError(
            f"split must be 'train' or 'val' (the test split has no labels), got {split!r}"
        )
    if dtype != torch.uint8 and not dtype.is_floating_point:
        raise ValueError(f"dtype must be torch.uint8 or a floating dtype, got {dtype}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive int or None, got {max_per_class}")
    directory = _locate(split, root)
    wnids = _read_wnids(directory / "wnids.txt")
    classes = _read_words(directory / "words.txt", wnids)
    list_files = _train_files if split == "train" else _val_files
    files, labels = list_files(directory, wnids, max_per_class)
    images = _decode_all(files)
    inputs = images if dtype == torch.uint8 else images.to(dtype).div_(255.0)
    return ArrayDataset(
        inputs,
        torch.tensor(labels, dtype=torch.int64),
        num_classes=len(wnids),
        name=f"tiny-imagenet/{split}",
        classes=classes,
    )
