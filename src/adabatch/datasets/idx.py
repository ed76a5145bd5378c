"""Reader for the IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.

An IDX file is a header followed by the raw array, C order:

- 4 magic bytes: ``0x00 0x00``, a type code, the number of dimensions ``ndim``;
- ``ndim`` big-endian unsigned 32-bit sizes (MNIST images: 60000, 28, 28);
- the ``prod(sizes)`` items, big-endian when they are wider than one byte.

Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
``0x0E`` float64.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import IO

import torch
from torch import Tensor

from ..errors import DatasetFormatError

__all__ = ["IDX_DTYPES", "read_idx"]

#: IDX type code → (torch dtype, name used in messages).
IDX_DTYPES: dict[int, tuple[torch.dtype, str]] = {
    0x08: (torch.uint8, "uint8"),
    0x09: (torch.int8, "int8"),
    0x0B: (torch.int16, "int16"),
    0x0C: (torch.int32, "int32"),
    0x0D: (torch.float32, "float32"),
    0x0E: (torch.float64, "float64"),
}

# Read the data in pieces of this size so that memory follows what the file holds, not what a
# corrupted header claims (a bad size field could otherwise ask for terabytes up front).
_CHUNK = 1 << 24

# Errors the gzip module raises on a corrupted or truncated stream.
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _is_gzip(path: Path) -> bool:
    # Decide by content, not by name: a ".gz" that was already decompressed is still read.
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_exactly(f: IO[bytes], n: int) -> bytearray:
    """Up to ``n`` bytes from ``f`` (fewer only at end of file), in a growing buffer."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _count_rest(f: IO[bytes]) -> int:
    n = 0
    while chunk := f.read(_CHUNK):
        n += len(chunk)
    return n


def _to_tensor(buf: bytearray, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """The big-endian items in ``buf`` as a tensor of ``shape``, without a Python loop."""
    if len(buf) == 0:  # torch.frombuffer refuses an empty buffer
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(buf, dtype=torch.uint8)  # shares memory with buf, keeps it alive
    itemsize = torch.empty((), dtype=dtype).element_size()
    if itemsize > 1 and sys.byteorder == "little":
        # Reverse the bytes of each item (one vectorised copy), then reinterpret them.
        raw = raw.view(-1, itemsize).flip(1).contiguous()
    return raw.view(dtype).reshape(shape)


def _describe(shape: tuple[int, ...], dtype_name: str) -> str:
    return f"shape {shape} {dtype_name}"


def _parse(f: IO[bytes], path: Path) -> Tensor:
    magic = f.read(4)
    if len(magic) < 4:
        raise DatasetFormatError(
            path, "a 4-byte IDX magic number", f"a file of {len(magic)} bytes (truncated)"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise DatasetFormatError(
            path,
            "an IDX magic number starting with two zero bytes (00 00 type ndim)",
            f"{magic.hex(' ')} — not an IDX file (or compressed with something other than gzip)",
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {name}" for c, (_, name) in IDX_DTYPES.items())
        raise DatasetFormatError(path, f"an IDX type code ({known})", f"0x{code:02X}")
    dtype, dtype_name = IDX_DTYPES[code]

    header = f.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DatasetFormatError(
            path,
            f"{ndim} big-endian 32-bit dimension sizes ({4 * ndim} bytes) after the magic number",
            f"{len(header)} bytes (truncated header)",
        )
    shape = struct.unpack(f">{ndim}I", header)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize

    buf = _read_exactly(f, nbytes)
    if len(buf) < nbytes:
        raise DatasetFormatError(
            path,
            f"{nbytes} data bytes for {_describe(shape, dtype_name)}",
            f"{len(buf)} (truncated file; download it again)",
        )
    extra = _count_rest(f)
    if extra:
        raise DatasetFormatError(
            path,
            f"{nbytes} data bytes for {_describe(shape, dtype_name)}",
            f"{nbytes + extra} ({extra} trailing bytes; not an IDX file or a wrong header)",
        )
    return _to_tensor(buf, dtype, shape)


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read an IDX file (plain or gzip-compressed) into a tensor.

    The tensor has the file's dtype (uint8 for MNIST) and shape; it is a fresh CPU tensor,
    not a view of the file. Compression is detected from the content (the gzip magic bytes),
    so a file named ``.gz`` that is already decompressed is read too.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.

    Returns:
        The array, e.g. a ``60000 × 28 × 28`` uint8 tensor for MNIST's training images.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DatasetFormatError: the file is not a valid IDX file: wrong magic number, unknown type
            code, truncated header or data, trailing bytes, or a corrupted gzip stream. The
            message names the file, what was expected and what was found.
    """
    path = Path(path)
    if not _is_gzip(path):
        with path.open("rb") as f:
            return _parse(f, path)
    try:
        with gzip.open(path, "rb") as f:
            return _parse(f, path)
    except _GZIP_ERRORS as exc:
        raise DatasetFormatError(
            path, "a valid gzip-compressed IDX file", f"a corrupted gzip stream ({exc})"
        ) from exc
