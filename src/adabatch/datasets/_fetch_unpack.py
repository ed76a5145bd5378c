"""Unpacking for ``adabatch data fetch``: Debian packages, tar members, safe tree extraction.

Pure Python where the standard library allows: a ``.deb`` is an ``ar`` archive (parsed here)
whose ``data.tar.*`` member holds the files; xz, gzip and bzip2 are in the standard library.
zstd is only there from Python 3.14 (``compression.zstd``): before that the ``zstandard`` package
is used if installed, else the ``zstd`` or ``dpkg-deb`` program if on PATH, and the user is told
which; with none of them the package route fails with a message saying what to install.
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple

__all__ = [
    "ArMember",
    "UnpackError",
    "ar_members",
    "deb_data_files",
    "extract_tree",
    "tar_files",
]

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60


class UnpackError(Exception):
    """An archive is malformed or uses a format this machine cannot unpack."""


class ArMember(NamedTuple):
    """One member of an ``ar`` archive: its name and where its bytes lie in the file."""

    name: str
    offset: int
    size: int


def ar_members(path: Path) -> list[ArMember]:
    """The members of the ``ar`` archive ``path`` (the container format of ``.deb`` files).

    Each member is a 60-byte ASCII header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10,
    then the two magic bytes backquote and newline) followed by its data, padded to an even
    offset. GNU ``ar`` ends names with ``/``; BSD ``ar`` writes long names as ``#1/<length>``
    with the name before the data.

    Raises:
        UnpackError: not an ``ar`` archive, or a header is damaged.
    """
    members = []
    with path.open("rb") as f:
        if f.read(len(_AR_MAGIC)) != _AR_MAGIC:
            raise UnpackError(f"{path.name} is not an ar archive (a .deb starts with !<arch>)")
        while header := f.read(_AR_HEADER):
            if len(header) < _AR_HEADER or header[58:60] != b"`\n":
                raise UnpackError(
                    f"{path.name}: damaged ar header at byte {f.tell() - len(header)}"
                )
            name = header[:16].decode("ascii", "replace").rstrip()
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError as exc:
                raise UnpackError(f"{path.name}: bad member size in ar header {header!r}") from exc
            offset = f.tell()
            if name.startswith("#1/"):
                name_len = int(name[3:])
                name = f.read(name_len).decode("utf-8", "replace").rstrip("\0")
                offset, size = offset + name_len, size - name_len
            members.append(ArMember(name.rstrip("/"), offset, size))
            f.seek(offset + size + (offset + size) % 2)
    return members


class _Window(io.RawIOBase):
    """A read-only stream over bytes ``[offset, offset + size)`` of an open binary file."""

    def __init__(self, file: IO[bytes], offset: int, size: int) -> None:
        super().__init__()
        self._file = file
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        self._file.seek(self._pos)
        data = self._file.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _zstd_reader(raw: IO[bytes]) -> IO[bytes] | None:
    """A decompressing reader from a Python zstd implementation, or None if there is none."""
    try:  # Python >= 3.14
        zstd = importlib.import_module("compression.zstd")
        return zstd.ZstdFile(raw)
    except ImportError:
        pass
    try:
        zstandard = importlib.import_module("zstandard")
        return zstandard.ZstdDecompressor().stream_reader(raw)
    except ImportError:
        return None


@contextmanager
def _program_output(args: list[str], what: str) -> Iterator[IO[bytes]]:
    """The stdout of a decompressing program; a failing exit status becomes an UnpackError."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None  # guaranteed by stdout=PIPE
        try:
            yield proc.stdout
        finally:
            proc.stdout.read()  # drain, so that the program can finish and report its status
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            if proc.wait() != 0:
                raise UnpackError(f"{what} failed (exit {proc.returncode}): {err}")


@contextmanager
def _zstd_tar_stream(
    deb: Path, member: ArMember, window: IO[bytes], say: Callable[[str], None]
) -> Iterator[IO[bytes]]:
    reader = _zstd_reader(window)
    if reader is not None:
        yield reader
        return
    zstd = shutil.which("zstd")
    if zstd:
        say(
            f"  {member.name}: this Python has no zstd support (it arrives with Python 3.14, or "
            f"pip install zstandard); decompressing with the program {zstd}"
        )
        # The program reads a file, so copy the member out first (next to the .deb).
        with tempfile.NamedTemporaryFile(dir=deb.parent, prefix=".data.", suffix=".tar.zst") as tmp:
            shutil.copyfileobj(window, tmp)
            tmp.flush()
            with _program_output([zstd, "-dc", "--", tmp.name], "zstd -dc") as out:
                yield out
        return
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb:
        say(
            f"  {member.name}: this Python has no zstd support; unpacking with the program "
            f"{dpkg_deb} --fsys-tarfile"
        )
        with _program_output([dpkg_deb, "--fsys-tarfile", str(deb)], "dpkg-deb") as out:
            yield out
        return
    raise UnpackError(
        f"{deb.name} stores its files as {member.name} (zstd), and this machine cannot "
        "decompress zstd: use Python >= 3.14, pip install zstandard, or install the zstd program"
    )


@contextmanager
def deb_data_files(
    deb: Path, say: Callable[[str], None] = lambda _: None
) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
    """The regular files of a ``.deb`` package's ``data.tar.*``, as ``(path, stream)`` pairs.

    Nothing is installed or written outside ``deb``'s directory: the package is only read.

    Args:
        deb: the downloaded ``.deb`` file.
        say: where to tell the user that an external program is used.

    Raises:
        UnpackError: no ``data.tar.*`` member, or a compression this machine cannot undo.
    """
    data = [m for m in ar_members(deb) if m.name.startswith("data.tar")]
    if not data:
        raise UnpackError(f"{deb.name} has no data.tar.* member; not a Debian binary package")
    member = data[0]
    compression = member.name[len("data.tar") :]
    with ExitStack() as stack:
        raw = stack.enter_context(deb.open("rb"))
        window: IO[bytes] = stack.enter_context(
            io.BufferedReader(_Window(raw, member.offset, member.size), 1 << 20)
        )
        stream: IO[bytes]
        if compression == "":
            stream = window
        elif compression == ".gz":
            stream = stack.enter_context(gzip.GzipFile(fileobj=window, mode="rb"))
        elif compression == ".xz":
            stream = stack.enter_context(lzma.LZMAFile(window))
        elif compression == ".bz2":
            stream = stack.enter_context(bz2.BZ2File(window))
        elif compression == ".zst":
            stream = stack.enter_context(_zstd_tar_stream(deb, member, window, say))
        else:
            raise UnpackError(f"{deb.name}: unknown compression of member {member.name}")
        # Streaming mode ("r|"): the decompressors need not support seeking.
        archive = stack.enter_context(tarfile.open(fileobj=stream, mode="r|"))
        yield tar_files(archive)


def tar_files(archive: tarfile.TarFile) -> Iterator[tuple[str, IO[bytes]]]:
    """``(member path, stream)`` for each regular file of ``archive``, in archive order.

    Works on streaming archives: each stream must be read before the next pair is taken.
    """
    for info in archive:
        if info.isfile():
            stream = archive.extractfile(info)
            if stream is not None:
                yield info.name, stream


def _safe_parts(name: str, top: str) -> tuple[str, ...] | None:
    """The path components of an archive member if it lies inside ``top/``, else None.

    Archives are data from the network: an absolute name or a ``..`` component would write
    outside the target directory, so such members are refused rather than trusted.
    """
    parts = tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", "."))
    if not parts or parts[0] != top or name.startswith("/") or ".." in parts:
        return None
    return parts


def _members(archive: Path, fmt: str) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    """``(name, is_directory, stream or None)`` of the directories and regular files."""
    if fmt == "tar":
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                if info.isdir():
                    yield info.name, True, None
                elif info.isfile():
                    yield info.name, False, tar.extractfile(info)
    elif fmt == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    yield info.filename, True, None
                else:
                    with zf.open(info) as stream:
                        yield info.filename, False, stream
    else:
        raise ValueError(f"unknown archive format {fmt!r}; expected 'tar' or 'zip'")


def extract_tree(archive: Path, fmt: str, root: Path, top: str) -> Path:
    """Extract the directory ``top/`` of ``archive`` into ``root``, replacing it atomically.

    The tree is written to a hidden staging directory in ``root`` and renamed to ``root/top``
    only when complete; an existing ``root/top`` is moved aside first and deleted afterwards.
    Members outside ``top/``, links and special files are skipped.

    Args:
        archive: a ``.tar``/``.tar.gz`` (``fmt="tar"``) or ``.zip`` (``fmt="zip"``) file.
        fmt: ``"tar"`` or ``"zip"``.
        root: the data root.
        top: the archive's top directory (``cifar-10-batches-py``, ...).

    Returns:
        ``root / top``.

    Raises:
        UnpackError: the archive is corrupted or has no ``top/`` directory.
    """
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{top}.", suffix=".partial"))
    try:
        count = 0
        try:
            for name, is_dir, stream in _members(archive, fmt):
                parts = _safe_parts(name, top)
                if parts is None:
                    continue
                dest = staging.joinpath(*parts)
                if is_dir:
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                assert stream is not None  # files come with a stream
                dest.parent.mkdir(parents=True, exist_ok=True)
                with dest.open("wb") as out:
                    shutil.copyfileobj(stream, out, 1 << 20)
                count += 1
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError) as exc:
            raise UnpackError(f"{archive.name}: corrupted archive ({exc})") from exc
        if count == 0:
            raise UnpackError(f"{archive.name} has no files under {top}/")
        final = root / top
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{top}.", suffix=".old"))
            os.replace(final, old / top)
        os.replace(staging / top, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
