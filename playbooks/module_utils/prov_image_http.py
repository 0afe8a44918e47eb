"""HTTP side of the image writer: connection settings, Range requests that resume across dropped
connections, Content-Range parsing and small JSON downloads (the bmap).

Part of the provisioner_image_write module (playbooks/library); runs on the target host, stdlib only.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse

from ansible.module_utils.prov_image_control import Aborted, Control, DownloadError, MiB, WriterError


def range_header(start: int, end: int | None) -> str:
    return f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """'bytes 10-19/100' -> (10, 20, 100) with end exclusive; total None for '*'."""
    if not value:
        return None
    try:
        unit, rest = value.strip().split(" ", 1)
        span, total = rest.split("/", 1)
        first, last = span.split("-", 1)
        if unit.lower() != "bytes":
            return None
        return int(first), int(last) + 1, None if total.strip() == "*" else int(total)
    except ValueError:
        return None


def next_delay(delay: float, cap: float = 5.0) -> float:
    return min(cap, delay * 2)


class Http:
    """Connection settings; one HttpClient per thread keeps its own keep-alive connection."""

    def __init__(self, url, headers, timeout, retry_timeout, validate_certs, ca_path) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WriterError(f"url must be http(s)://host/...: {url}", "bad_params")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.headers = dict(headers)
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self.ssl_ctx = None
        if self.scheme == "https":
            self.ssl_ctx = ssl.create_default_context(cafile=ca_path)
            if not validate_certs:
                self.ssl_ctx.check_hostname = False
                self.ssl_ctx.verify_mode = ssl.CERT_NONE

    def with_url(self, url: str) -> Http:
        other = Http.__new__(Http)
        other.__dict__.update(self.__dict__)
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(self._base(), url))
        other.scheme, other.host, other.port = parts.scheme, parts.hostname, parts.port
        other.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        return other

    def _base(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.host}{port}{self.path}"

    def connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ssl_ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HttpClient:
    def __init__(self, http_cfg: Http, ctl: Control) -> None:
        self.cfg = http_cfg
        self.ctl = ctl
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def open(self, start: int, end: int | None) -> tuple[http.client.HTTPResponse, int | None]:
        """GET the bytes from ``start`` (to ``end``); returns the response positioned at ``start``
        and the total size of the resource when the server told it.

        Raises WriterError for permanent errors and OSError/HTTPException for transient ones.
        """
        if self.conn is None:
            self.conn = self.cfg.connect()
        headers = dict(self.cfg.headers)
        if start > 0 or end is not None:
            headers["Range"] = range_header(start, end)
        try:
            self.conn.request("GET", self.cfg.path, headers=headers)
            resp = self.conn.getresponse()
        except BaseException:
            self.close()
            raise
        status = resp.status
        if status in (401, 403):
            self._drain_close(resp)
            raise WriterError(f"HTTP {status} from {self.cfg.path}: token rejected", "auth_failed")
        if status in (404, 410):
            self._drain_close(resp)
            raise WriterError(f"HTTP {status}: {self.cfg.path} not found", "not_found")
        if status in TRANSIENT_STATUS:
            self._drain_close(resp)
            raise http.client.HTTPException(f"HTTP {status} (transient)")
        if status == 206:
            cr = parse_content_range(resp.getheader("Content-Range"))
            if cr is None or cr[0] != start:
                self._drain_close(resp)
                got = resp.getheader("Content-Range")
                raise DownloadError(f"server sent Content-Range {got!r} for {range_header(start, end)}")
            return resp, cr[2]
        if status == 200:
            total = resp.length
            if start:
                self._skip(resp, start)  # server ignored Range: discard the prefix we already have
            return resp, total
        self._drain_close(resp)
        raise WriterError(f"HTTP {status} for {self.cfg.path}", "download_failed")

    def _skip(self, resp: http.client.HTTPResponse, n: int) -> None:
        buf = bytearray(min(n, MiB))
        view = memoryview(buf)
        while n:
            got = resp.readinto(view[: min(n, len(buf))])
            if not got:
                raise http.client.IncompleteRead(b"")
            self.ctl.count("bytes_downloaded", got)
            n -= got

    def _drain_close(self, resp: http.client.HTTPResponse) -> None:
        try:
            resp.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            pass
        self.close()


class RangeReader:
    """Reads bytes [start, end) (end None: to EOF) from the URL, resuming across dropped connections.

    Retry policy: exponential backoff from 0.25 s (capped at 5 s); gives up once no byte arrived
    for ``retry_timeout`` seconds. Permanent HTTP errors are raised at once.
    """

    def __init__(self, client: HttpClient, start: int, end: int | None) -> None:
        self.client = client
        self.ctl = client.ctl
        self.pos = start
        self.end = end
        self.total: int | None = None
        self.eof = False
        self.resp: http.client.HTTPResponse | None = None
        self._failing_since: float | None = None
        self._delay = 0.25
        self._last_error: str = ""

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` completely unless the resource ends first; returns bytes read."""
        got = 0
        want = len(view)
        if self.end is not None:
            want = min(want, self.end - self.pos)
        if self.eof:
            return 0
        while got < want:
            self.ctl.check()
            try:
                if self.resp is None:
                    self.resp, total = self.client.open(self.pos, self.end)
                    if total is not None:
                        self.total = total
                n = self.resp.readinto(view[got:want])
            except (OSError, http.client.HTTPException) as exc:
                self._transient(exc)
                continue
            if n == 0:  # clean end of the response body
                self.resp = None
                if self.end is None and (self.total is None or self.pos >= self.total):
                    self.eof = True
                    break
                self._transient(DownloadError("response ended early"))
                continue
            got += n
            self.pos += n
            self.ctl.count("bytes_downloaded", n)
            self._failing_since = None
            self._delay = 0.25
        if self.resp is not None and self.end is not None and self.pos >= self.end:
            if not self.resp.isclosed():  # server sent more than asked: the connection is unusable
                self.client.close()
            self.resp = None  # fully consumed; http.client already freed the connection for reuse
        return got

    def _transient(self, exc: BaseException) -> None:
        self.client.close()
        self.resp = None
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._last_error = f"{type(exc).__name__}: {exc}"
        waited = now - self._failing_since
        if waited >= self.client.cfg.retry_timeout:
            raise DownloadError(
                f"download failed at byte {self.pos}: no progress for {waited:.1f}s (last error: {self._last_error})"
            )
        self.ctl.count("retries", 1)
        pause = min(self._delay, max(0.0, self.client.cfg.retry_timeout - waited))
        if self.ctl.abort.wait(pause):
            raise Aborted()
        self._delay = next_delay(self._delay)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])


def fetch_json(http_cfg: Http, ctl: Control, limit: int = 256 * MiB) -> object:
    client = HttpClient(http_cfg, ctl)
    reader = RangeReader(client, 0, None)
    chunks = []
    size = 0
    while True:
        data = reader.read(MiB)
        if not data:
            break
        size += len(data)
        if size > limit:
            raise WriterError(f"bmap larger than {limit} bytes", "bmap_invalid")
        chunks.append(data)
    client.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise WriterError(f"bmap_url did not return JSON: {exc}", "bmap_invalid") from exc
