"""The two ways loading a data set fails: the files are not there, or they are not right."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetFormatError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files were found in none of the places searched.

    The message names the data set, every directory searched, and how to get the files:
    ``adabatch data fetch NAME`` or where to put them by hand.
    """

    def __init__(self, name: str, searched: Sequence[Path], hint: str) -> None:
        self.name = name
        self.searched = [Path(p) for p in searched]
        where = "\n".join(f"  - {p}" for p in self.searched) or "  (no directory)"
        super().__init__(f"data set {name!r} not found; looked in:\n{where}\n{hint}")


class DatasetFormatError(ValueError):
    """A data set file exists but is truncated, corrupted or not in the expected format.

    The message names the file, what was expected and what was found.
    """

    def __init__(self, path: str | Path, expected: str, found: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}: expected {expected}, found {found}")
