"""Downloads for ``adabatch data fetch`` through pooch, with every failure put in words.

`Session.get` streams a URL with pooch's HTTP downloader (a tqdm bar on a terminal) to a hidden
`staged` path and checks its hash with pooch's `file_hash`; the route checks the content before
renaming the file to its final name (`pooch.retrieve` would move it there first). Failures are
recorded as `Attempt`s for `FetchError`. pooch, requests and tqdm are imported only when used.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import secrets
import shutil
import socket
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_TIMEOUT", "Attempt", "Downloader", "Session", "mismatch", "staged"]

#: Seconds to wait for a connection or the next piece of data. Short on purpose: the canonical
#: sites come first and are unreachable from many networks, where each should cost seconds.
DEFAULT_TIMEOUT = 15.0

#: A pooch downloader ``downloader(url, output_file, pooch)``: writes the body of ``url`` to the
#: path ``output_file`` or raises. Given to `fetch`, it replaces the network (tests).
Downloader = Callable[[str, str, Any], None]

# Connection failures that say the host (or the network) cannot be reached at all.
_UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


@dataclass(frozen=True)
class Attempt:
    """One failed try: the route, the URL (or package member) and why it failed."""

    route: str
    source: str
    reason: str
    skipped: bool = False  # not tried because its host was found unreachable before

    def __str__(self) -> str:
        return f"[{self.route}] {self.source}: {self.reason}"


def mismatch(what: str, algorithm: str, expected: str, found: str) -> str:
    """The reason recorded when ``what`` does not have the checksum it must have."""
    return f"checksum mismatch for {what}: expected {algorithm} {expected}, got {found}"


def _reason(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """Why a transfer failed, in a few words, and whether its host is unreachable altogether."""
    import requests  # a dependency of pooch, there once anything is downloaded

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason or ''}".rstrip(), False
    causes = [exc]
    for cause in causes:  # grows as it goes: requests and urllib3 bury causes in args and reason
        # A timeout while streaming reaches us as requests' ConnectionError around a socket one.
        if isinstance(cause, (requests.Timeout, TimeoutError)):
            return f"timed out after {timeout:g} s", True
        if isinstance(cause, http.client.IncompleteRead):  # body shorter than Content-Length
            got = cause.partial if isinstance(cause.partial, int) else len(cause.partial)
            of = f" of {got + cause.expected}" if cause.expected is not None else ""
            return f"truncated: received {got}{of} bytes", False
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({cause.strerror or cause})", True
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
            return f"cannot connect ({cause.strerror or cause})", True
        wrapped = (getattr(cause, "reason", None), *cause.args, cause.__cause__, cause.__context__)
        causes += [w for w in wrapped if isinstance(w, BaseException) and w not in causes]
    return f"{type(exc).__name__}: {exc}", False


@dataclass
class Session:
    """What one `fetch` call shares between routes: transport, notes on stderr, failures."""

    timeout: float = DEFAULT_TIMEOUT
    quiet: bool = False
    downloader: Downloader | None = None  # for every URL, instead of pooch's and file:// copies
    attempts: list[Attempt] = field(default_factory=list)
    dead_hosts: set[str] = field(default_factory=set)  # found unreachable: skipped from then on

    def say(self, message: str) -> None:
        """Write one line to stderr (stdout stays free for results), unless quiet."""
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def fail(self, route: str, source: str, reason: str, *, skipped: bool = False) -> None:
        """Record a failed try, and say it unless it was skipped."""
        self.attempts.append(Attempt(route, source, reason, skipped))
        if not skipped:  # skips are summed up in the final error, not announced one by one
            self.say(f"  failed: {source}: {reason}")

    def get(
        self,
        route: str,
        url: str,
        dest: Path,
        *,
        known_hash: str | None = None,
        what: str = "the download",
        probe: bool = False,
    ) -> bool:
        """Download ``url`` to the `staged` path ``dest``; False (recorded) if it fails.

        A ``known_hash`` (``"algorithm:hex"``) must match, or the failure names ``what``. A
        ``probe`` (package metadata) shows no bar, and its failure does not mark the host
        unreachable: the download proper still gets its try. Local disk errors are raised.
        """
        import pooch

        host = urllib.parse.urlsplit(url).netloc
        if host in self.dead_hosts and not probe:
            self.fail(route, url, f"not tried: {host} was unreachable before", skipped=True)
            return False
        if not probe:
            self.say(f"  downloading {url}")
        try:
            self._transfer(url, dest, bar=not probe)
        except Exception as exc:  # every failure of one source is recorded, not raised
            name = getattr(exc, "filename", None)
            if name and Path(name).parent == dest.parent:
                raise  # the local disk's problem: the target directory is not writable
            reason, unreachable = _reason(exc, self.timeout)
            if unreachable and host and not probe:
                self.dead_hosts.add(host)
            self.fail(route, url, reason)
            return False
        algorithm, _, expected = (known_hash or "").partition(":")
        if known_hash and (found := pooch.file_hash(str(dest), alg=algorithm)) != expected.lower():
            self.fail(route, url, mismatch(what, algorithm, expected, found))
            return False
        return True

    def _transfer(self, url: str, dest: Path, *, bar: bool) -> None:
        import pooch

        if self.downloader is not None:
            return self.downloader(url, str(dest), None)
        if url.startswith("file:"):  # pooch has no downloader for local mirrors: a copy is one
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), dest)
            return None
        progress: Any = False  # pooch's "no bar"; tqdm is optional
        with contextlib.suppress(ImportError):
            from tqdm.auto import tqdm

            # total=1 until pooch sets the Content-Length (a bar without one is false to pooch);
            # disable=None draws on a terminal only: logs and CI output stay free of bars.
            name = urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1])
            off = True if self.quiet or not bar else None
            progress = tqdm(desc=f"  {name}", total=1, unit="B", unit_scale=True, disable=off)
        http = pooch.HTTPDownloader(progress, chunk_size=1 << 16, timeout=self.timeout)
        try:
            http(url, str(dest), None)
        except Exception:
            if progress:  # cleared, not left standing at 0%
                progress.leave = False
            raise
        finally:
            if progress:  # pooch closes it only after a complete transfer
                progress.close()


@contextlib.contextmanager
def staged(directory: Path, final_name: str) -> Iterator[Path]:
    """A fresh hidden path in ``directory`` to assemble ``final_name`` in; removed on exit.

    Renamed in place (atomic) once checked, a file appears under its final name whole or not at
    all. The path keeps the suffix, which says how to read it.
    """
    path = directory / f".part-{secrets.token_hex(6)}-{final_name}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
