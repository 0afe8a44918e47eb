"""The HTTP server a worker runs while a deploy boots, from which the host's BMC downloads the per-job
boot ISO (``provisioner/imaging/boot_iso.py``) as virtual media.

    with MediaServer(iso_path, settings) as url:   # http://HOST:PORT/media/<token>/boot.iso
        bmc.insert_media(url); ...
    # out of the block: nothing listens any more; the caller deletes the file

It serves exactly one file at one unguessable path (``/media/<32 random bytes, urlsafe>/boot.iso``;
the ISO holds the job's SSH host key, so the URL is its only protection on the BMC's network): GET and
HEAD with single HTTP byte ranges (206, 416), a 404 for every other path, 501 for other methods. It
listens on ``PROVISIONER_MEDIA_BIND`` (default ``127.0.0.1:0``, any free port) and names
``PROVISIONER_MEDIA_HOST`` (default: the bind host) in the URL.

Why the standard library's ThreadingHTTPServer and not uvicorn + Starlette's FileResponse (which the
image API uses): uvicorn's access log is the process-wide ``uvicorn.access`` logger, so in the
embedded service (API and workers in one process) a second uvicorn would either log the token-bearing
path or switch the API's access log off; this server logs nothing, and a thread per connection is
plenty for one BMC. The bytes go out with ``socket.sendfile`` (zero copy). Several ranges in one
request are answered with the whole file (RFC 9110 lets a server ignore Range; BMCs ask for one).
"""

from __future__ import annotations

import email.utils
import hmac
import logging
import os
import re
import secrets
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from provisioner.store.config import Settings

log = logging.getLogger("provisioner.media_server")

FILE_NAME = "boot.iso"
CONTENT_TYPE = "application/x-iso9660-image"
IDLE_TIMEOUT_S = 60.0  # a BMC's idle keep-alive connection is dropped after this
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)  # the unit is case-insensitive


def byte_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """The Range header as an inclusive (first, last) within ``size`` bytes; None to send the whole
    file (no header, not one valid bytes range); False when it cannot be satisfied (a 416)."""
    m = _RANGE.fullmatch(header.strip()) if header else None
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # the last N bytes
        n = int(last)
        return (size - min(n, size), size - 1) if n > 0 and size > 0 else False
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 says
    if start >= size:
        return False
    return start, size - 1 if last == "" else min(int(last), size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handlers: nothing serves after exit
    block_on_close = True

    def __init__(self, sock: socket.socket, path: Path, url_path: str) -> None:
        self.file_path = path
        self.url_path = url_path.encode()
        self.live: set[socket.socket] = set()
        self.live_lock = threading.Lock()
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock  # bound and listening already (the port is known before any thread starts)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.live_lock:
            self.live.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.live_lock:
            self.live.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """End every connection still open (a download in flight, an idle keep-alive)."""
        with self.live_lock:
            live = list(self.live)
        for conn in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a BMC dropping a connection is no error.
        log.debug("media connection from %s ended with an error", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: ranged downloads make many requests
    server_version = "provisioner-media"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry the token: never logged

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        path = self.path.split("?", 1)[0].encode()
        if not hmac.compare_digest(path, self.server.url_path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            f = open(self.server.file_path, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            rng = byte_range(self.headers.get("Range"), size)
            if_range = self.headers.get("If-Range")
            if rng is not None and if_range is not None and if_range.strip() not in (etag, modified):
                rng = None  # the client's copy is of other bytes: send them all
            if rng is False:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = rng if isinstance(rng, tuple) else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if isinstance(rng, tuple) else HTTPStatus.OK)
            if isinstance(rng, tuple):
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            if body and last >= first:
                self.wfile.flush()
                self.connection.sendfile(f, first, last - first + 1)


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return sock


class MediaServer:
    """Serve ``path`` at a fresh unguessable URL for the life of the ``with`` block (see the module
    docstring). ``url`` is set on entry; the token is never logged."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.url = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> str:
        if not self.path.is_file():
            raise FileNotFoundError(f"no file to serve at {self.path}")
        token = secrets.token_urlsafe(32)
        url_path = f"/media/{token}/{FILE_NAME}"
        sock = _listen(*self.settings.media_bind_address)
        try:
            self._server = _Server(sock, self.path, url_path)
        except BaseException:
            sock.close()
            raise
        port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"media-server-{port}", daemon=True)
        self._thread.start()
        self.url = f"http://{self.settings.media_url_host}:{port}{url_path}"
        log.info("serving a boot ISO (%d bytes) on port %d", self.path.stat().st_size, port)
        return self.url

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()  # the accept loop ends
        server.socket.close()  # new connections are refused from here on
        server.cut_connections()
        server.server_close()  # joins the handler threads, which the cut has ended
        thread.join()
        self.url = ""
