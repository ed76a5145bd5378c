r"""Text corpora as fixed-length byte sequences, for next-token language models.

A corpus is the files of its registry entry (``adabatch data fetch fortunes``: fortune-mod's
English quotations from Debian, 2.48 MB), read as bytes and concatenated in the registry's
order. Byte-level: the vocabulary is the 256 byte values, so no tokenizer is trained or
downloaded, and every file — ASCII, Latin-1 or UTF-8 — is read the same way.

Splits. The held-out split is the corpus's last ``held_out`` fraction, cut at the first record
separator (``"\n%\n"`` for fortunes, else a newline) at or after that point, so that no
quotation is split between training and evaluation. It is contiguous, not sampled, so the two
splits share no text.

Samples. A split of n bytes is cut into ⌊(n − 1)/T⌋ consecutive windows of T + 1 bytes with
stride T; sample i's input is bytes [iT, iT + T) and its target bytes [iT + 1, iT + T + 1).
Each sample therefore has exactly T target tokens: a batch of B samples is B·T tokens, and
the mean loss over a batch's tokens is the mean of its samples' mean losses (the per-sample
gradient of that token-mean loss is the sequence's own token-mean gradient).

Documents (``packing="documents"``): one record (a quotation) per sample instead, of variable
length: its first T + 1 bytes, the rest of the row padded with input 0 and target
`IGNORE_INDEX`. Sample i then has Tᵢ ≤ T real target tokens; `count_tokens` counts a batch's.
`adabatch.models.next_token_loss` sums the real tokens' losses and divides by B·T, so each
sequence weighs by its length in the loss, in the gradient and in the per-sample statistics.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from ..errors import DatasetNotFoundError
from .base import ArrayDataset
from .fetch import DATASETS
from .paths import search_roots

__all__ = [
    "IGNORE_INDEX",
    "PACKINGS",
    "VOCAB_SIZE",
    "byte_sequences",
    "count_tokens",
    "document_sequences",
    "load_text",
    "split_corpus",
]

VOCAB_SIZE = 256
#: The target of a padding position (PyTorch's cross-entropy default ``ignore_index``).
IGNORE_INDEX = -100
#: How a split becomes samples: fixed-length windows, or one padded record per sample.
PACKINGS = ("windows", "documents")
_SEPARATORS = {"fortunes": b"\n%\n"}


def _read_corpus(name: str, root: str | os.PathLike[str] | None) -> bytes:
    spec = DATASETS.get(name)
    if spec is None or type(spec).__name__ != "TextCorpus":
        corpora = sorted(n for n, s in DATASETS.items() if type(s).__name__ == "TextCorpus")
        raise ValueError(f"unknown text corpus {name!r}; corpora: {', '.join(corpora)}")
    names = [f.name for f in spec.files]
    searched = []
    for base in search_roots(root):
        directory = spec.path(base)
        searched.append(directory)
        if all((directory / n).is_file() for n in names):
            return b"".join((directory / n).read_bytes() for n in names)
    first = spec.path(search_roots(root)[0])
    raise DatasetNotFoundError(
        name,
        searched,
        f"run `adabatch data fetch {name}` (or put its {len(names)} files in {first})",
    )


def split_corpus(data: bytes, held_out: float, separator: bytes = b"\n") -> tuple[bytes, bytes]:
    r"""(train, held-out): the last ``held_out`` fraction, cut at the next ``separator``.

    Example:
        >>> split_corpus(b"aa\nbb\ncc\ndd\n", 0.5)
        (b'aa\nbb\ncc\n', b'dd\n')
    """
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    start = int(len(data) * (1.0 - held_out))
    found = data.find(separator, start)
    if found < 0:
        raise ValueError(
            f"no record separator {separator!r} after {start} of {len(data)} bytes: cannot cut "
            "a held-out split at a record boundary; lower held_out"
        )
    cut = found + len(separator)
    return data[:cut], data[cut:]


def byte_sequences(data: bytes, seq_len: int, *, name: str = "") -> ArrayDataset:
    """Consecutive windows of ``seq_len`` + 1 bytes, stride ``seq_len``: inputs and next bytes.

    Returns an `ArrayDataset` of int64 inputs and targets, both ``N × seq_len``, with
    ``tokens_per_sample = seq_len`` and ``vocab_size = 256`` attributes.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    count = (len(data) - 1) // seq_len
    if count < 1:
        raise ValueError(
            f"{name or 'the text'} has {len(data)} bytes, too few for one sequence of "
            f"{seq_len} + 1; use a shorter seq_len"
        )
    ids = torch.frombuffer(bytearray(data[: count * seq_len + 1]), dtype=torch.uint8).long()
    starts = torch.arange(count) * seq_len
    window = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    blocks = ids[window]
    dataset = ArrayDataset(
        blocks[:, :-1].contiguous(), blocks[:, 1:].contiguous(), num_classes=VOCAB_SIZE, name=name
    )
    dataset.tokens_per_sample = seq_len  # type: ignore[attr-defined]
    dataset.vocab_size = VOCAB_SIZE  # type: ignore[attr-defined]
    return dataset


def document_sequences(
    data: bytes, seq_len: int, separator: bytes, *, name: str = ""
) -> ArrayDataset:
    r"""One sample per record (``data`` split at ``separator``), padded to ``seq_len``.

    Record r (its separator kept, so the model learns where a record ends) gives the input
    r[:T] and the target r[1:T + 1], both padded to T: input 0, target `IGNORE_INDEX`.
    ``tokens_per_sample`` is T, the capacity; the real target tokens of a batch are
    `count_tokens` of it.

    Example:
        >>> ds = document_sequences(b"ab\n%\ncdef\n%\n", 4, b"\n%\n")
        >>> ds.targets.tolist()
        [[98, 10, 37, 10], [100, 101, 102, 10]]
        >>> document_sequences(b"ab\n%\n", 8, b"\n%\n").targets.tolist()
        [[98, 10, 37, 10, -100, -100, -100, -100]]
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    # with its separator, every non-empty record has a target
    records = [(r + separator)[: seq_len + 1] for r in data.split(separator) if r]
    if not records:
        raise ValueError(f"{name or 'the text'} has no record")
    inputs = torch.zeros(len(records), seq_len, dtype=torch.long)
    targets = torch.full((len(records), seq_len), IGNORE_INDEX, dtype=torch.long)
    for i, record in enumerate(records):
        ids = torch.frombuffer(bytearray(record), dtype=torch.uint8).long()
        inputs[i, : len(ids) - 1] = ids[:-1]
        targets[i, : len(ids) - 1] = ids[1:]
    dataset = ArrayDataset(inputs, targets, num_classes=VOCAB_SIZE, name=name)
    dataset.tokens_per_sample = seq_len  # type: ignore[attr-defined]
    dataset.vocab_size = VOCAB_SIZE  # type: ignore[attr-defined]
    return dataset


def count_tokens(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The real target tokens of an (inputs, targets) batch: targets not `IGNORE_INDEX`.

    A 0-dim tensor on the batch's device, so that summing it over batches (as `evaluate`
    does) waits for no device; ``int()`` of it is the count.
    """
    return (batch[1] != IGNORE_INDEX).sum()


def load_text(
    name: str = "fortunes",
    root: str | os.PathLike[str] | None = None,
    *,
    split: Literal["train", "test"] = "train",
    seq_len: int = 64,
    held_out: float = 0.1,
    packing: str = "windows",
) -> ArrayDataset:
    """One split of a text corpus as byte sequences (see the module docstring).

    ``packing``: "windows" (fixed-length windows, every sample T tokens) or "documents" (one
    record per sample, padded: variable length).

    Raises:
        ValueError: ``name`` is not a text corpus, ``split`` not "train"/"test", or
            ``packing`` not one of `PACKINGS`.
        DatasetNotFoundError: no data root holds the corpus's files.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, got {packing!r}")
    data = _read_corpus(name, root)
    separator = _SEPARATORS.get(name, b"\n")
    train, test = split_corpus(data, held_out, separator)
    part = train if split == "train" else test
    if packing == "documents":
        return document_sequences(part, seq_len, separator, name=f"{name}/{split}")
    return byte_sequences(part, seq_len, name=f"{name}/{split}")
