"""Data sets published as one archive (CIFAR, Tiny-ImageNet): fetch one, unpack one, safely.

`extract_directory` (also used by the CIFAR loader) extracts into a temporary directory renamed
into place when complete: a crash or a corrupted archive never leaves a half-filled directory
that later looks complete. Only regular files below the top directory are written: absolute
paths, ``..``, links and devices are ignored. (pooch's Untar and Unzip extract everything, in
place.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from gzip import BadGzipFile
from lzma import LZMAError
from pathlib import Path, PurePosixPath
from tarfile import TarError
from typing import IO, ClassVar
from zipfile import BadZipFile

from ..errors import DatasetFormatError
from ._fetch_download import Session, staged
from ._optional import require

__all__ = ["ARCHIVE_ERRORS", "ArchiveDataset", "extract_directory"]

#: What reading a corrupted or truncated archive or compressed stream raises (not disk errors).
ARCHIVE_ERRORS = (TarError, BadZipFile, BadGzipFile, LZMAError, EOFError, zlib.error)


def _below(name: str, top: str) -> PurePosixPath | None:
    """The path of member ``name`` below ``top``, or None if it does not lie under it."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    inside = len(parts) > 1 and parts[0] == top and ".." not in parts
    return PurePosixPath(*parts[1:]) if inside else None


def _files(archive: Path, top: str) -> Iterator[tuple[PurePosixPath, IO[bytes]]]:
    """``(path below top, stream)`` of the regular files under ``top`` of a zip or tar."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and (below := _below(info.filename, top)):
                    with zf.open(info) as stream:
                        yield below, stream
        return
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            stream = tar.extractfile(member) if member.isfile() else None
            if stream is not None and (below := _below(member.name, top)):
                yield below, stream


def extract_directory(archive: Path, top: str, destination: Path, *, replace: bool = False) -> Path:
    """Extract the directory ``top`` of ``archive`` into ``destination / top``, atomically.

    ``archive`` is a tar (plain, gzip, bzip2 or xz), or a zip if its name ends in ``.zip``. With
    ``replace`` (``fetch --force``) an existing ``destination / top`` is replaced; without, one
    that exists (another process extracted it first) is kept and this copy discarded.

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
        try:
            for relative, source in _files(archive, top):
                (tmp / top / relative).parent.mkdir(parents=True, exist_ok=True)
                with (tmp / top / relative).open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        except ARCHIVE_ERRORS as exc:
            kind = "zip" if archive.name.endswith(".zip") else "tar"
            found = f"{type(exc).__name__}: {exc} (truncated or corrupted; download it again)"
            raise DatasetFormatError(archive, f"a complete {kind} archive", found) from exc
        if not (tmp / top).is_dir():
            raise DatasetFormatError(archive, f"files under {top}/", "none")
        if replace and target.exists():
            os.replace(target, tmp / ".old")  # deleted with the temporary directory
        # On the same file system a rename is atomic; if it fails because another process
        # won the race, its complete directory is as good as ours.
        with contextlib.suppress(OSError):
            os.rename(tmp / top, target)
        if not target.is_dir():
            raise OSError(f"could not move the extracted {tmp / top} to {target}")
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class ArchiveDataset:
    """A data set published as one archive whose top directory is the data set directory."""

    name: str  # the name `fetch` takes
    directory: str  # the archive's top directory, extracted to root / directory
    archive: str  # the archive's file name; a zip if it ends in .zip, else a tar
    md5: str  # as the publisher gives it
    urls: tuple[str, ...]  # tried in order
    required: tuple[str, ...]  # paths under directory that must exist for it to be present
    archive_in_root: bool = False  # the loader also reads the unextracted archive in the root
    description: str = ""  # one line for `adabatch data list`
    label: ClassVar[str] = "canonical"

    def path(self, root: Path) -> Path:
        """``root / directory``."""
        return root / self.directory

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The extracted directory if its required files are there, else the archive in root."""
        if all((self.path(root) / r).exists() for r in self.required):
            return self.path(root)
        archive = root / self.archive
        if not (self.archive_in_root and archive.is_file()):
            return None
        if verify:  # the publishers' md5 is of the archive only (and only checking it needs pooch)
            md5 = require("pooch", "verifying an archive").file_hash(str(archive), alg="md5")
            return archive if md5 == self.md5 else None
        return archive

    def install(self, root: Path, session: Session, *, force: bool) -> bool:
        """Download the archive from the first URL that serves it intact, and extract it."""
        session.say(f"{self.name}: trying the {self.label} route")
        for url in self.urls:
            with staged(root, self.archive) as tmp:
                known, what = f"md5:{self.md5}", self.archive
                if not session.get(self.label, url, tmp, known_hash=known, what=what):
                    continue
                session.say(f"  verified {self.archive} (md5 {self.md5})")
                try:
                    extracted = extract_directory(tmp, self.directory, root, replace=True)
                except DatasetFormatError as exc:
                    session.fail(self.label, url, f"expected {exc.expected}, found {exc.found}")
                    continue
            if not (missing := [r for r in self.required if not (extracted / r).exists()]):
                return True
            session.fail(self.label, url, f"the archive lacks {', '.join(missing)}")
        return False

    def manual(self, root: Path) -> str:
        """Where to get the archive and where to extract it."""
        alt = f", or leave the archive itself at {root / self.archive}"
        return (
            f"download {self.archive} (md5 {self.md5}) from {self.urls[0]} and extract it in "
            f"{root}/ so that {self.path(root)}/ holds {', '.join(self.required)}"
            + (alt if self.archive_in_root else "")
        )
