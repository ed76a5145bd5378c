"""Fixtures that cut tests off the network and from the user's data directories.

`offline` closes every route out; `http_site` opens one to a local HTTP server, for the tests
of the real HTTP download path (pooch's downloader, progress bars, truncated bodies).
"""

from __future__ import annotations

import functools
import http.server
import io
import socket
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No `$ADABATCH_DATA`, a private default root, and every proxy a closed local port."""
    monkeypatch.delenv("ADABATCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, proxy)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield
    closed.close()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site directory; files in ``short/`` come with a Content-Length 1000 bytes too
    long, and files in ``stall/`` stop for a second after their first 10 bytes."""

    def send_head(self):  # type: ignore[override]
        path = Path(self.translate_path(self.path))
        if path.parent.name not in ("short", "stall") or not path.is_file():
            return super().send_head()
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + 1000 * (path.parent.name == "short")))
        self.end_headers()
        if path.parent.name == "stall":
            self.wfile.write(body[:10])
            self.wfile.flush()
            time.sleep(1)
            body = body[10:]
        return io.BytesIO(body)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(name="http_site")
def http_site_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``(directory, base URL)`` of a local HTTP server, reached without the closed proxies."""
    site = tmp_path / "www"
    site.mkdir()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    handler = functools.partial(_Handler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()
