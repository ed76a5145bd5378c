"""Downloads for ``adabatch data fetch``: streaming to a staging file, digests, progress.

Everything here is transport: it moves bytes from a URL into a hidden staging file next to the
final one and reports what went wrong in words. Deciding whether the bytes are *right* (checksums
of the content, package integrity) is the caller's job; `fetch` installs a file under its final
name only after that decision, with one ``os.replace``.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import http.client
import secrets
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

__all__ = [
    "DEFAULT_TIMEOUT",
    "Opener",
    "Reporter",
    "SourceError",
    "content_digest",
    "default_opener",
    "download",
    "read_url",
    "staged",
]

#: Seconds to wait for a connection or for the next piece of data. Short on purpose: the
#: canonical sites are tried first and are unreachable from many networks, where each one should
#: cost seconds, not minutes, before the next route is tried.
DEFAULT_TIMEOUT = 15.0

#: ``opener(url, timeout)`` returns a readable response (``read(n)``, ``close()``, optionally
#: ``headers``). The default is urllib's; tests pass their own to simulate failures.
Opener = Callable[[str, float], Any]

_CHUNK = 1 << 20
# Files smaller than this download without a progress display.
_PROGRESS_MIN_BYTES = 4 << 20
# Connection failures that say the host (or the network) cannot be reached at all.
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ETIMEDOUT,
}
# Errors of the decompressors on corrupted or truncated input.
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, ValueError)


class SourceError(Exception):
    """One source (a URL) could not deliver: the reason is a short phrase for the user.

    Attributes:
        url: the URL that failed.
        reason: what went wrong (``HTTP 404 Not Found``, ``timed out after 15 s``, ...).
        unreachable: True when the host could not be reached at all, so that other files on the
            same host need not be tried again.
    """

    def __init__(self, url: str, reason: str, *, unreachable: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.unreachable = unreachable
        super().__init__(f"{url}: {reason}")


def default_opener(url: str, timeout: float) -> Any:
    """Open ``url`` with urllib (http, https, file), identifying the client as adabatch.

    The opener is built per call so that the proxy settings (``https_proxy``, ``no_proxy``, ...)
    are read from the environment as it is now, not as it was at the first download.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "adabatch-data-fetch"})
    return urllib.request.build_opener().open(request, timeout=timeout)


def _reason(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A short description of a transport error and whether the host was unreachable.

    "Unreachable" (no name resolution, connection refused or timed out) means other URLs on the
    same host would fail the same way; an HTTP or TLS error says nothing about other URLs.
    """
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".rstrip(), False
    if isinstance(inner, TimeoutError):
        return f"timed out after {timeout:g} s", True
    if isinstance(inner, socket.gaierror):
        return f"cannot resolve the host name ({inner.strerror or inner})", True
    if isinstance(inner, ssl.SSLError):
        return f"TLS error ({inner})", False
    if isinstance(inner, FileNotFoundError):  # file:// URLs
        return f"no such file ({inner.filename or inner})", False
    if isinstance(inner, OSError) and inner.errno in _UNREACHABLE_ERRNOS:
        return f"cannot connect ({inner.strerror or inner})", True
    if isinstance(inner, http.client.HTTPException):
        return f"connection broken ({type(inner).__name__}: {inner})", False
    if isinstance(inner, ValueError):
        return f"not a usable URL ({inner})", False
    if isinstance(exc, urllib.error.URLError):
        return f"cannot open ({inner})", False
    return f"{type(inner).__name__}: {inner}", False


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class Reporter:
    """Progress and notes for the user, on stderr (stdout stays free for results).

    Args:
        quiet: say nothing.
        stream: where to write; ``sys.stderr`` as it is at the time of writing by default (so
            that redirections made after construction, e.g. by pytest, are honoured).
    """

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        """The text stream written to."""
        return self._stream if self._stream is not None else sys.stderr

    def say(self, message: str) -> None:
        """Write one line, unless quiet."""
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A callback ``advance(n_bytes)`` that shows how far a download of ``total`` bytes is.

        On a terminal the line is redrawn in place at most a few times a second; elsewhere (logs,
        CI) only the final size and time are written, so that logs do not fill with progress.
        """
        start = time.monotonic()
        done = 0
        shown = 0.0
        width = 0  # length of the last progress line, to blank it out at the end
        live = (
            not self.quiet
            and (total is None or total >= _PROGRESS_MIN_BYTES)
            and self.stream.isatty()
        )

        def advance(n: int) -> None:
            nonlocal done, shown, width
            done += n
            now = time.monotonic()
            if live and now - shown >= 0.2:
                shown = now
                of = f" / {_mib(total)} ({100 * done / total:3.0f}%)" if total else ""
                line = f"  {label}: {_mib(done)}{of}"
                width = len(line)
                self.stream.write(f"\r{line}")
                self.stream.flush()

        yield advance
        if live:
            self.stream.write("\r" + " " * width + "\r")
        if not self.quiet and (done >= _PROGRESS_MIN_BYTES or live):
            elapsed = time.monotonic() - start
            self.say(f"  {label}: {_mib(done)} in {elapsed:.1f} s")


def download(
    url: str,
    dest: Path,
    *,
    opener: Opener,
    timeout: float,
    reporter: Reporter,
    digests: tuple[str, ...] = ("sha256",),
) -> dict[str, str]:
    """Stream ``url`` into the file ``dest`` and return the hex digests of what was received.

    Args:
        url: any URL the opener understands (``https://``, ``file://``, ...).
        dest: the staging file to (over)write.
        opener: see `Opener`.
        timeout: seconds for the connection and for each read.
        reporter: where progress goes.
        digests: hashlib algorithm names to compute while downloading.

    Raises:
        SourceError: the URL could not be opened or the transfer broke off (including a body
            shorter than its announced ``Content-Length``).
    """
    hashers = {name: hashlib.new(name) for name in digests}
    label = urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1]) or url
    try:
        response = opener(url, timeout)
    except Exception as exc:  # every failure of one source is reported, not raised
        reason, unreachable = _reason(exc, timeout)
        raise SourceError(url, reason, unreachable=unreachable) from exc
    received = 0
    with closing(response):
        total = _content_length(response)
        try:
            with dest.open("wb") as out, reporter.progress(label, total) as advance:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
        except Exception as exc:  # a broken transfer is this source's failure
            if isinstance(exc, OSError) and exc.filename == str(dest):
                raise  # a local disk problem, not the source's: let the caller see it
            reason, _ = _reason(exc, timeout)
            raise SourceError(url, f"transfer broke off after {received} bytes: {reason}") from exc
    if total is not None and received != total:
        raise SourceError(url, f"truncated: received {received} of {total} bytes")
    return {name: h.hexdigest() for name, h in hashers.items()}


def read_url(url: str, *, opener: Opener, timeout: float, limit: int = 16 << 20) -> bytes:
    """The whole body of a small resource (package metadata), at most ``limit`` bytes.

    Raises:
        SourceError: as `download`, or the body is larger than ``limit``.
    """
    try:
        with closing(opener(url, timeout)) as response:
            body = response.read(limit + 1)
    except Exception as exc:  # every failure of one source is reported, not raised
        reason, unreachable = _reason(exc, timeout)
        raise SourceError(url, reason, unreachable=unreachable) from exc
    if len(body) > limit:
        raise SourceError(url, f"response larger than {limit} bytes; not package metadata")
    return body


@contextmanager
def staged(directory: Path, final_name: str) -> Iterator[Path]:
    """A fresh hidden staging file in ``directory``, removed on exit unless renamed away.

    Staging in the target directory (not in /tmp) keeps the final ``os.replace`` a rename on one
    file system, so a file appears under its final name complete and verified, or not at all.
    """
    # Not tempfile.mkstemp: its files are private (0600) and would stay so once renamed into
    # place; an exclusive create gives the usual permissions (umask) and is as safe.
    while True:
        path = directory / f".{final_name}.{secrets.token_hex(4)}.part"
        try:
            path.open("xb").close()
            break
        except FileExistsError:
            continue
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _open_decompressed(path: Path, compression: str | None) -> IO[bytes]:
    if compression is None:
        return path.open("rb")
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    raise ValueError(f"unknown compression {compression!r}; expected None, 'gzip' or 'bz2'")


def content_digest(
    path: Path, compression: str | None = None, algorithm: str = "sha256"
) -> tuple[str, int]:
    """Digest and size of the *decompressed* content of ``path``.

    Args:
        path: the file.
        compression: ``None`` (plain), ``"gzip"`` or ``"bz2"``.
        algorithm: a hashlib algorithm name.

    Returns:
        ``(hex digest, number of bytes)`` of the content.

    Raises:
        ValueError: the compressed stream is corrupted or truncated (the message names the file).
    """
    h = hashlib.new(algorithm)
    size = 0
    try:
        with _open_decompressed(path, compression) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except _DECOMPRESS_ERRORS as exc:
        if isinstance(exc, OSError) and exc.filename == str(path):
            raise
        raise ValueError(f"{path.name}: corrupted {compression} stream ({exc})") from exc
    return h.hexdigest(), size
