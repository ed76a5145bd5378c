"""Downloads for ``adabatch data fetch`` through pooch, with every failure put in words.

`Session.get` hands a URL to `pooch.retrieve`, which streams it (requests, with a tqdm bar on a
terminal) into a temporary file, checks the known hash and only then moves it to a hidden
`staged` name; a route's content check runs before that move, and the route `publish`-es the
file under its final name. Failures are recorded as `Attempt`s for `FetchError`, not raised.
pooch, requests and tqdm are imported only once something is downloaded.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_TIMEOUT", "Attempt", "Downloader", "Session", "mismatch", "publish", "staged"]

#: Seconds to wait for a connection or the next piece of data. Short on purpose: the canonical
#: sites come first and are unreachable from many networks, where each should cost seconds.
DEFAULT_TIMEOUT = 15.0

#: A pooch downloader ``downloader(url, output_file, pooch)``: writes the body of ``url`` to the
#: path ``output_file`` or raises. Given to `fetch`, it replaces the network (tests).
Downloader = Callable[[str, str, Any], None]

# Connection failures that say the host (or the network) cannot be reached at all.
_UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
# How pooch words a hash mismatch, reworded by `mismatch` (pooch's text is the fallback).
_POOCH_MISMATCH = re.compile(r"expected (?:\w+:)?(\w+) but got (\w+)")


@dataclass(frozen=True)
class Attempt:
    """One failed try: the route, the URL (or package member) and why it failed."""

    route: str
    source: str
    reason: str
    skipped: bool = False  # not tried because its host was found unreachable before

    def __str__(self) -> str:
        return f"[{self.route}] {self.source}: {self.reason}"


class _RejectedError(Exception):
    """The download arrived but a route's content check refused it (the message says why)."""


def mismatch(what: str, algorithm: str, expected: str, found: str) -> str:
    """The reason recorded when ``what`` does not have the checksum it must have."""
    return f"checksum mismatch for {what}: expected {algorithm} {expected}, got {found}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and all it wraps: requests and urllib3 bury the cause in args and reason."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if id(e) not in seen:
            seen.add(id(e))
            yield e
            wrapped = (getattr(e, "reason", None), *e.args, e.__cause__, e.__context__)
            todo += [w for w in wrapped if isinstance(w, BaseException)]


def _reason(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A short phrase for a failed transfer, and whether its host is unreachable altogether.

    Unreachable (no name resolution, refused, timed out) means every other URL on that host
    would fail the same way; an HTTP or TLS error says nothing about the host's other files.
    """
    import requests  # a dependency of pooch, there once anything is downloaded

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason or ''}".rstrip(), False
    for cause in _causes(exc):
        # A timeout while streaming reaches us as requests' ConnectionError around a socket one.
        if isinstance(cause, (requests.Timeout, TimeoutError)):
            return f"timed out after {timeout:g} s", True
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({cause.strerror or cause})", True
        if isinstance(cause, http.client.IncompleteRead):  # body shorter than Content-Length
            got = cause.partial if isinstance(cause.partial, int) else len(cause.partial)
            of = f" of {got + cause.expected}" if cause.expected is not None else ""
            return f"truncated: received {got}{of} bytes", False
        if isinstance(cause, FileNotFoundError):  # file:// URLs
            return f"no such file ({cause.filename or cause})", False
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
            return f"cannot connect ({cause.strerror or cause})", True
    return f"{type(exc).__name__}: {exc}", False


def _progress_bar(url: str, quiet: bool) -> Any:
    """A tqdm bar for pooch to fill, or False without tqdm (pooch then shows none)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return False
    name = urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1])
    # total=1 until pooch sets the Content-Length (a bar without a total is false to pooch);
    # disable=None draws on a terminal only, so that logs and CI output stay free of bars.
    disable = True if quiet else None
    return tqdm(desc=f"  {name}", total=1, unit="B", unit_scale=True, disable=disable)


@dataclass
class Session:
    """What one `fetch` call shares between routes: transport, notes on stderr, failures.

    ``downloader`` (tests) replaces pooch's HTTP downloader and the file:// copy for every URL;
    ``dead_hosts`` are hosts found unreachable, whose later URLs are skipped, not waited for.
    """

    timeout: float = DEFAULT_TIMEOUT
    quiet: bool = False
    downloader: Downloader | None = None
    attempts: list[Attempt] = field(default_factory=list)
    dead_hosts: set[str] = field(default_factory=set)

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
        check: Callable[[Path], str | None] | None = None,
        probe: bool = False,
    ) -> bool:
        """Download ``url`` to the `staged` path ``dest``; False (recorded) if it fails.

        ``known_hash`` (``"algorithm:hex"``) is checked by pooch, naming ``what`` if it does not
        match; ``check(path)`` returns why the arrived file is unacceptable, or None. A
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

        def download(url: str, output_file: str, caller: Any) -> None:
            self._transfer(url, output_file, caller, progress=not probe)
            if check is not None and (problem := check(Path(output_file))) is not None:
                raise _RejectedError(problem)

        logger = pooch.get_logger()
        level = logger.level
        logger.setLevel(logging.WARNING)  # its INFO lines repeat our notes, in pooch's terms
        try:
            pooch.retrieve(url, known_hash, fname=dest.name, path=dest.parent, downloader=download)
            return True
        except _RejectedError as exc:
            reason = str(exc)
        except Exception as exc:  # every failure of one source is recorded, not raised
            name = getattr(exc, "filename", None)
            if isinstance(exc, PermissionError) or (name and Path(name).parent == dest.parent):
                raise  # the local disk's problem (pooch's, when the directory is read-only)
            found = _POOCH_MISMATCH.search(str(exc)) if isinstance(exc, ValueError) else None
            if found is not None and known_hash is not None:  # always "algorithm:hex" here
                reason = mismatch(what, known_hash.partition(":")[0], found[1], found[2])
            else:
                reason, unreachable = _reason(exc, self.timeout)
                if unreachable and host and not probe:
                    self.dead_hosts.add(host)
        finally:
            logger.setLevel(level)
        self.fail(route, url, reason)
        return False

    def _transfer(self, url: str, output_file: str, caller: Any, *, progress: bool) -> None:
        import pooch

        if self.downloader is not None:
            self.downloader(url, output_file, caller)
        elif url.startswith("file:"):  # pooch has no downloader for local mirrors: a copy is one
            path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
            shutil.copyfile(path, output_file)
        else:
            bar = _progress_bar(url, self.quiet) if progress else False
            http = pooch.HTTPDownloader(
                progressbar=bar,
                chunk_size=1 << 16,
                timeout=self.timeout,
                headers={"User-Agent": "adabatch-data-fetch"},
            )
            try:
                http(url, output_file, caller)
            except Exception:
                if bar:  # cleared, not left standing at 0%
                    bar.leave = False
                raise
            finally:
                if bar:  # pooch closes it only after a complete transfer
                    bar.close()


@contextmanager
def staged(directory: Path, final_name: str) -> Iterator[Path]:
    """A fresh hidden path in ``directory`` to assemble ``final_name`` in; removed on exit.

    In the target directory, `publish` is a rename within one file system: a file appears
    under its final name complete and verified, or not at all. The path keeps the final name's
    suffix (which tells how to read it) and is not created: pooch would take it for done.
    """
    path = directory / f".part-{secrets.token_hex(6)}-{final_name}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def publish(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``, readable as the umask allows (pooch's files are 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    staging.chmod(0o666 & ~umask)
    os.replace(staging, final)
