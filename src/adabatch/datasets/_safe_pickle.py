"""Unpickling of numpy arrays, lists and dicts that runs no code named by the file.

``pickle.load`` calls whatever callable a file names, so a pickle from the internet can run
arbitrary code (``os.system`` is one opcode away). Allowing only numpy's own array
reconstruction is not enough either: ``numpy.dtype.__setstate__`` trusts the flags it is given,
and a crafted state makes numpy treat raw bytes as object pointers (a crash, or worse).

So the unpickler here maps the three globals a pickled numpy array needs
(``numpy.core.multiarray._reconstruct`` — ``numpy._core...`` since numpy 2 —,
``numpy.ndarray`` and ``numpy.dtype``) to inert placeholder classes that only record their
arguments, and refuses every other global before importing anything. Once the file is read,
each placeholder array is checked (a plain numeric dtype from a fixed list, a shape, raw bytes
of exactly the right length) and rebuilt with ``numpy.frombuffer``.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import IO, Any

from ..errors import DatasetFormatError
from ._optional import require

__all__ = ["safe_load"]

# The dtypes an array may have: booleans, integers and floats, nothing with object pointers.
_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
_BYTE_ORDERS = {"<", ">", "|", "="}


class _ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global that is not on the allow-list."""


class _BadArrayError(ValueError):
    """A placeholder array whose recorded arguments do not describe a plain numeric array."""


def _text(value: Any) -> Any:
    # Python 2 strings come back as bytes under encoding="bytes".
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _DTypePlaceholder:
    """Stands for ``numpy.dtype(spec, align, copy)`` plus its pickled state."""

    spec: Any = None
    state: Any = None

    def __init__(self, spec: Any = None, *_args: Any) -> None:
        self.spec = spec

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def build(self, np: Any) -> Any:
        spec = _text(self.spec)
        if not isinstance(spec, str) or spec not in _DTYPES:
            shown = repr(spec) if isinstance(spec, str) else type(spec).__name__
            raise _BadArrayError(f"array dtype {shown}; only {', '.join(sorted(_DTYPES))} are read")
        dtype = np.dtype(spec)
        state = self.state
        if state is not None:
            # (version, byte order, subarray, names, fields, ...): only plain dtypes are read.
            if (
                not isinstance(state, tuple)
                or len(state) < 5
                or any(s is not None for s in state[2:5])
            ):
                raise _BadArrayError(f"dtype state {state!r} (a structured or subarray dtype)")
            order = _text(state[1])
            if order not in _BYTE_ORDERS:
                raise _BadArrayError(f"dtype byte order {state[1]!r}")
            if order in "<>":
                dtype = dtype.newbyteorder(order)
        return dtype


class _NdarrayPlaceholder:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


class _ArrayPlaceholder:
    """Stands for ``_reconstruct(ndarray, shape, typecode)`` plus its ``__setstate__``."""

    subtype: Any = None
    state: Any = None

    def __init__(self, subtype: Any = None, *_args: Any) -> None:
        self.subtype = subtype

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def build(self, np: Any) -> Any:
        state = self.state
        if self.subtype is not _NdarrayPlaceholder or not isinstance(state, tuple):
            raise _BadArrayError("an array without a valid pickled state")
        # numpy writes (version, shape, dtype, is_fortran, data); old files lack the version.
        if len(state) == 5:
            state = state[1:]
        if len(state) != 4:
            raise _BadArrayError(f"an array state of {len(state)} fields")
        shape, dtype, fortran, data = state
        if not isinstance(dtype, _DTypePlaceholder):
            raise _BadArrayError("an array without a dtype")
        dtype = dtype.build(np)
        if (
            not isinstance(shape, tuple)
            or not all(isinstance(n, int) and n >= 0 for n in shape)
            or not isinstance(data, bytes)
        ):
            raise _BadArrayError("an array whose shape or raw data is malformed")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise _BadArrayError(
                f"{expected} bytes of array data for shape {shape} {dtype}, found {len(data)}"
            )
        flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
        return flat.reshape(shape, order="F" if fortran else "C").copy()


_ALLOWED: dict[tuple[str, str], type] = {
    ("numpy.core.multiarray", "_reconstruct"): _ArrayPlaceholder,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayPlaceholder,
    ("numpy", "ndarray"): _NdarrayPlaceholder,
    ("numpy", "dtype"): _DTypePlaceholder,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        # Keys and strings of Python 2 pickles stay bytes (b"data"), as in the CIFAR files.
        super().__init__(file, encoding="bytes")

    def find_class(self, module: str, name: str) -> type:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _ForbiddenGlobalError(f"{module}.{name}") from None


def _build(obj: Any, np: Any) -> Any:
    """``obj`` with every placeholder array replaced by the numpy array it describes."""
    if isinstance(obj, _ArrayPlaceholder):
        return obj.build(np)
    if isinstance(obj, _DTypePlaceholder | _NdarrayPlaceholder):
        raise _BadArrayError("a numpy type outside an array")
    if isinstance(obj, dict):
        return {_build(k, np): _build(v, np) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_build(v, np) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_build(v, np) for v in obj)
    return obj


def safe_load(path: Path) -> Any:
    """Unpickle ``path``, building only numpy arrays of plain numeric dtypes and containers.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object (for CIFAR, a dict with bytes keys).

    Raises:
        DatasetFormatError: the file is truncated or not a pickle; it names a callable other
            than numpy's array reconstruction (``os.system``, ...) — refused without running
            anything; or an array in it is malformed. The message names the file.
    """
    np = require("numpy", "reading pickled numpy arrays")
    with path.open("rb") as f:
        try:
            raw = _RestrictedUnpickler(f).load()
        except _ForbiddenGlobalError as exc:
            raise DatasetFormatError(
                path,
                "a pickle of numpy arrays, lists and dicts only",
                f"a reference to {exc} — refused, not executed (the file is not a genuine data "
                "batch; delete it and download the data set again)",
            ) from None
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            OverflowError,
            MemoryError,
        ) as exc:
            # Truncated or garbled files surface as any of these, depending on where they break
            # (a garbled length field asks for an absurd allocation: MemoryError, OverflowError).
            raise DatasetFormatError(
                path,
                "a complete pickle file",
                f"{type(exc).__name__}: {exc} (truncated or corrupted; download it again)",
            ) from exc
    try:
        return _build(raw, np)
    except RecursionError as exc:
        raise DatasetFormatError(path, "a pickle of bounded depth", "too deep nesting") from exc
    except _BadArrayError as exc:
        raise DatasetFormatError(
            path, "pickled numpy arrays of a plain numeric dtype", str(exc)
        ) from None
