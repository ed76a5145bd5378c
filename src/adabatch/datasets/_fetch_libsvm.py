"""LIBSVM data sets: a training file and perhaps a test file, checked by format and size.

The LIBSVM site publishes no checksums: a download is accepted if it looks like a LIBSVM file
of the number of samples the site states, and the sha256 of what arrived is printed for users
to record. A ``.bz2`` is decompressed once, so that loads do not pay for bzip2 each time.
"""

from __future__ import annotations

import bz2
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ._fetch_download import Session, staged

__all__ = ["LibsvmDataset", "LibsvmFile"]

# The forms of a LIBSVM file the loader reads; fetch writes the first.
_SUFFIXES = ("", ".bz2", ".gz")
_LINE = re.compile(rb"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\s+\d+:\S+)*\s*$")


@dataclass(frozen=True)
class LibsvmFile:
    """One file of a LIBSVM data set."""

    name: str  # the local name under libsvm/ (a9a, a9a.t)
    remote: str  # the name on the site (a9a.t, rcv1_train.binary.bz2); .bz2 is decompressed
    samples: int  # the number of samples (lines) the site states, checked after download

    def problem(self, raw: Path, plain: Path) -> str | None:
        """Move (or decompress) the download ``raw`` to ``plain`` and check it: None, or why not."""
        if not self.remote.endswith(".bz2"):
            raw.replace(plain)
        else:
            try:
                with bz2.open(raw, "rb") as source, plain.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
            except (OSError, EOFError, ValueError) as exc:
                return f"corrupted bz2 stream ({exc})"
        with plain.open("rb") as f:
            first = f.readline()
            lines = sum(1 for _ in f) + bool(first)  # a last line without its newline counts
        if not _LINE.match(first.rstrip(b"\r\n")):
            return f"not in LIBSVM format: first line {first[:80]!r}"
        return None if lines == self.samples else f"expected {self.samples} samples, found {lines}"


@dataclass(frozen=True)
class LibsvmDataset:
    """A data set of the LIBSVM collection: ``files`` holds the training file, then any test."""

    name: str  # the name `fetch` takes, and the local training file's name
    files: tuple[LibsvmFile, ...]
    bases: tuple[str, ...]  # the site's directory, and any mirrors
    description: str = ""  # one line for `adabatch data list`
    directory: ClassVar[str] = "libsvm"
    label: ClassVar[str] = "canonical"

    def path(self, root: Path) -> Path:
        """The training file ``root/libsvm/<name>`` (a test file is that path plus ``.t``)."""
        return root / self.directory / self.files[0].name

    def _existing(self, root: Path, name: str) -> Path | None:
        paths = (root / self.directory / f"{name}{suffix}" for suffix in _SUFFIXES)
        return next((p for p in paths if p.is_file() and p.stat().st_size > 0), None)

    def find(self, root: Path, *, verify: bool = True) -> Path | None:
        """The training file, in a form the loader reads, if all files are there (non-empty)."""
        found = [self._existing(root, f.name) for f in self.files]
        return found[0] if None not in found else None

    def install(self, root: Path, session: Session, *, force: bool) -> bool:
        """Download, check and install the missing (with ``force``: all) files."""
        import pooch

        directory = root / self.directory
        directory.mkdir(parents=True, exist_ok=True)
        session.say(f"{self.name}: trying the {self.label} route")
        missing = [f for f in self.files if force or self._existing(root, f.name) is None]
        installed = 0
        for file in missing:
            for url in (f"{base.rstrip('/')}/{file.remote}" for base in self.bases):
                with staged(directory, file.remote) as raw, staged(directory, file.name) as plain:
                    if not session.get(self.label, url, raw):
                        continue
                    digest = pooch.file_hash(str(raw))  # LIBSVM has none: users can record this one
                    session.say(
                        f"  sha256 of {file.remote}: {digest} (LIBSVM publishes no checksums)"
                    )
                    if problem := file.problem(raw, plain):
                        session.fail(self.label, url, problem)
                        continue
                    plain.replace(directory / file.name)
                # A compressed copy left beside it would be a second, unchecked version to read.
                for suffix in _SUFFIXES[1:]:
                    (directory / f"{file.name}{suffix}").unlink(missing_ok=True)
                session.say(f"  installed {directory / file.name} ({file.samples} samples)")
                installed += 1
                break
        return installed == len(missing)

    def manual(self, root: Path) -> str:
        """Which files to download and save under which names."""
        parts = (
            f"{self.bases[0]}/{f.remote} -> {root / self.directory / f.name}" for f in self.files
        )
        return (
            f"download and save {'; '.join(parts)} (decompressed with bunzip2, or kept "
            "compressed with the .bz2 suffix added to the local name)"
        )
