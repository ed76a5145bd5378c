"""Unpack one directory of a ``.tar.gz`` archive, all or nothing.

The members are written into a temporary directory next to the destination and the finished
directory is renamed into place, so a crash or a corrupted archive never leaves a half-filled
data set directory that later looks complete. Only regular files below the expected top
directory are written, by name checked here: absolute paths, ``..``, links and devices in a
downloaded archive are ignored rather than trusted.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import DatasetFormatError

__all__ = ["extract_directory"]

_ARCHIVE_ERRORS = (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)


def _member_target(member: tarfile.TarInfo, top: str) -> PurePosixPath | None:
    """The path of a member relative to ``top``, or None if it is not a plain file under it."""
    if not member.isfile():
        return None
    parts = PurePosixPath(member.name).parts
    if not parts or parts[0] != top or any(p in ("..", "") for p in parts) or len(parts) < 2:
        return None
    return PurePosixPath(*parts[1:])


def extract_directory(archive: Path, top: str, destination: Path) -> Path:
    """Extract the directory ``top`` of a ``.tar.gz`` into ``destination / top``, atomically.

    If ``destination / top`` appears meanwhile (another process extracted it first), that one
    is kept and the copy made here is discarded.

    Args:
        archive: the ``.tar.gz`` file.
        top: the archive's top-level directory to extract, e.g. ``"cifar-10-batches-py"``.
        destination: the directory to extract into (the temporary directory is made there so
            that the final rename stays on one file system).

    Returns:
        ``destination / top``.

    Raises:
        DatasetFormatError: the archive is corrupted or truncated, or holds no file under
            ``top``; nothing is left behind.
        OSError: ``destination`` is not writable.
    """
    target = destination / top
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=".partial", dir=destination))
    except OSError as exc:
        raise OSError(
            f"cannot extract {archive.name} into {destination} ({exc}); make that directory "
            f"writable, or extract the archive there by hand (giving {target})"
        ) from exc
    try:
        count = 0
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    relative = _member_target(member, top)
                    if relative is None:
                        continue
                    out = tmp / top / relative
                    out.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    if source is None:
                        continue
                    with source, out.open("wb") as sink:
                        shutil.copyfileobj(source, sink)
                    count += 1
        except _ARCHIVE_ERRORS as exc:
            raise DatasetFormatError(
                archive,
                "a complete .tar.gz archive",
                f"{type(exc).__name__}: {exc} (truncated or corrupted; download it again)",
            ) from exc
        if count == 0:
            raise DatasetFormatError(archive, f"files under {top}/", "none")
        # On the same file system a rename is atomic; if it fails because another process
        # won the race, its complete directory is as good as ours.
        with contextlib.suppress(OSError):
            os.rename(tmp / top, target)
        if not target.is_dir():
            raise OSError(f"could not move the extracted {tmp / top} to {target}")
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
