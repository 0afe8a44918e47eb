#!/usr/bin/python
"""Ansible module: stream a disk image from the provisioner service onto a block device.

Runs on the target host with the host's python3: stdlib only, plus ``zstandard`` when
``compression=zstd`` (imported lazily so raw images need nothing extra).

Design notes (why it is built this way):

* Integrity. The block map (bmap, see provisioner/imaging/bmap.py) lists the data ranges of the raw
  image with one sha256 each; every other byte of the image is zero. Every range is hashed while it
  streams in; on the zstd path every hole is also checked to decompress to zeros. Together with a
  bmap bound to the expected image (``sha256`` must equal ``bmap.sha256``) that is equivalent to
  checking the whole image's sha256, but it lets a corrupt range be named.
* Never bootable when incomplete. The first MiB of the target (MBR, GPT header, boot loader) is
  zeroed before anything else is written and the image's first MiB is written only after every
  range hashed correctly, the rest was flushed and (with ``verify``) read back correctly.
* No stale data. Ranges without data are made to read as zeros: fallocate(PUNCH_HOLE) on regular
  files; BLKZEROOUT on block devices (offloaded when the device supports WRITE ZEROES, else the
  kernel writes the zeros), BLKDISCARD only when the device guarantees discarded blocks read as
  zeros; plain zero writes when all of that fails.
* Speed. Uncompressed images with Range support: only data ranges are fetched, by several workers
  in parallel (this is what beats dd on sparse images). zstd images: one HTTP stream decompressed
  in its own thread. Either way hashing and writing run in other threads, joined by bounded
  queues of preallocated, page-aligned 4 MiB buffers (bounded memory, O_DIRECT-ready). hashlib,
  zstd, socket and file I/O all release the GIL, so the stages really overlap.
* Durability. Periodic fsync (``fsync_interval``) keeps the device busy and dirty memory bounded
  instead of one huge flush at the end; the final fsyncs are part of the timings.
* Resume. Transport-level: a dropped or stalled connection is re-opened with a Range request for
  the exact next byte, and the bytes go on into the same sha256 / zstd decompressor state (the
  decompressor consumed exactly the compressed bytes received so far, so continuing the byte stream
  is sound). If the server answers 200 instead of 206, the prefix is read and discarded. Retries
  back off exponentially and give up once no byte arrived for ``retry_timeout`` seconds. Completed
  ranges are re-checked by the read-back verification.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import http.client
import json
import mmap
import os
import queue
import ssl
import stat
import struct
import threading
import time
import traceback
import urllib.parse

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: provisioner_image_write
short_description: Write a raw or zstd-compressed disk image from an HTTP(S) URL to a block device
description:
  - Streams the image, checks the sha256 of every data range of its block map, skips holes (making
    them read as zeros on the target), writes the first MiB last and verifies by reading back.
  - Runs with stdlib only; C(compression=zstd) needs the python3 zstandard package.
options:
  url:
    description: URL of the image content (raw or .raw.zst). The server should support Range.
    type: str
    required: true
  token:
    description: Bearer token sent as C(Authorization) header.
    type: str
  headers:
    description: Extra HTTP headers (may carry secrets, never logged).
    type: dict
  bmap:
    description: Block map dict (version, block_size, image_size, sha256, ranges).
    type: dict
  bmap_url:
    description: URL of the block map JSON, fetched with the same headers/token.
    type: str
  compression:
    description: Encoding of the content at I(url).
    type: str
    choices: [none, zstd]
    default: none
  sha256:
    description: Expected sha256 of the full raw image; must match the block map.
    type: str
  target:
    description: Block device (or, for tests, an existing regular file) to write.
    type: path
    required: true
  verify:
    description: Read every data range back after writing and compare its sha256.
    type: bool
    default: true
  download_workers:
    description: Parallel range downloads (uncompressed images with Range support).
    type: int
    default: 4
  write_workers:
    description: Threads issuing writes.
    type: int
    default: 2
  verify_workers:
    description: Threads reading back for verification.
    type: int
    default: 4
  queue_depth:
    description: Number of in-flight chunk buffers (memory is queue_depth * chunk_size).
    type: int
    default: 8
  chunk_size:
    description: Bytes per read/write, multiple of 1 MiB.
    type: int
    default: 4194304
  fsync_interval:
    description: Bytes written between periodic fsyncs.
    type: int
    default: 67108864
  direct_io:
    description: Use O_DIRECT; C(auto) uses it when the target accepts it.
    type: str
    choices: [auto, 'yes', 'no']
    default: auto
  timeout:
    description: Socket timeout in seconds (a stall longer than this counts as a dropped connection).
    type: float
    default: 30
  retry_timeout:
    description: Give up once no byte could be downloaded for this many seconds.
    type: float
    default: 300
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle for the service's certificate.
    type: path
"""

EXAMPLES = r"""
- name: Write the image
  provisioner_image_write:
    url: "https://prov.example/images/42/content.raw.zst"
    bmap_url: "https://prov.example/images/42/bmap"
    compression: zstd
    sha256: "{{ image_sha256 }}"
    token: "{{ image_token }}"
    target: /dev/sda
"""

RETURN = r"""
mode:
  description: C(ranges) (only data ranges fetched, in parallel), C(zstd-stream) or C(raw-stream).
  type: str
  returned: success
bytes_written:
  description: Data bytes written (holes excluded).
  type: int
  returned: always
bytes_zeroed:
  description: Hole bytes made to read as zeros.
  type: int
  returned: always
bytes_downloaded:
  description: HTTP body bytes received.
  type: int
  returned: always
retries:
  description: Connection retries (resumed downloads).
  type: int
  returned: always
ranges:
  description: Number of data ranges in the block map.
  type: int
  returned: success
timings:
  description: >-
    Seconds. C(total) is wall time; the others are busy time of each stage summed over its threads
    (stages overlap, so they can add up to more than total).
  type: dict
  returned: always
throughput_mbps:
  description: Image size divided by total time, in MB/s.
  type: float
  returned: success
error:
  description: >-
    Failure code. C(image_corrupt) means the served image does not match its block map (flag the
    image); others are auth_failed, not_found, download_failed, bmap_invalid, bad_params,
    target_too_small, target_invalid, target_busy, write_failed, verify_failed, internal_error.
  type: str
  returned: failure
image_corrupt:
  description: True when the failure is the image's fault.
  type: bool
  returned: failure
bad_range:
  description: The range (start, end, and for hash mismatches expected/actual sha256) that failed.
  type: dict
  returned: failure
"""

MiB = 1 << 20
BLOCK = 4096
HEAD_SIZE = MiB  # written last: holds MBR / GPT header / boot loader
BLKZEROOUT = 0x127F  # _IO(0x12, 127)
BLKDISCARD = 0x1277  # _IO(0x12, 119)
BLKRRPART = 0x125F  # _IO(0x12, 95)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
ZERO_CHUNK = 4 * MiB
ZEROS = bytes(ZERO_CHUNK)
TIMING_KEYS = ("download", "decompress", "hash", "write", "zero", "sync", "verify", "total")


# --------------------------------------------------------------------------------------------------
# errors


class WriterError(Exception):
    code = "write_failed"

    def __init__(self, msg: str, code: str | None = None, **details: object) -> None:
        super().__init__(msg)
        if code:
            self.code = code
        self.details = details


class ImageCorrupt(WriterError):
    code = "image_corrupt"


class DownloadError(WriterError):
    code = "download_failed"


class Aborted(Exception):
    """Another stage failed; this one just stops."""


# --------------------------------------------------------------------------------------------------
# pure helpers


def validate_bmap(bmap: object) -> list[str]:
    """Problems with a bmap dict; mirrors provisioner.imaging.bmap.validate_bmap (standalone copy)."""
    if not isinstance(bmap, dict):
        return ["bmap is not an object"]
    problems = []
    if bmap.get("version") != 1:
        problems.append(f"unsupported bmap version {bmap.get('version')!r}")
    size = bmap.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append("image_size must be a non-negative integer")
        size = None
    if not is_hex_digest(bmap.get("sha256")):
        problems.append("sha256 must be a 64-char hex digest")
    ranges = bmap.get("ranges")
    if not isinstance(ranges, list):
        return problems + ["ranges must be a list"]
    prev_end = 0
    for i, r in enumerate(ranges):
        if not isinstance(r, dict):
            problems.append(f"range {i} is not an object")
            continue
        start, end = r.get("start"), r.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            problems.append(f"range {i} needs integers 0 <= start < end")
            continue
        if start < prev_end:
            problems.append(f"range {i} {fmt_range(start, end)} overlaps or is out of order")
        if size is not None and end > size:
            problems.append(f"range {i} {fmt_range(start, end)} ends past image_size {size}")
        if not is_hex_digest(r.get("sha256")):
            problems.append(f"range {i} sha256 must be a 64-char hex digest")
        prev_end = max(prev_end, end)
    return problems


def is_hex_digest(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def fmt_range(start: int, end: int) -> str:
    return f"[{start}, {end})"


def holes_of(ranges: list[tuple[int, int]], size: int, skip_below: int = 0) -> list[tuple[int, int]]:
    """Complement of sorted data ranges within [skip_below, size)."""
    holes = []
    pos = skip_below
    for start, end in ranges:
        if start > pos:
            holes.append((pos, min(start, size)))
        pos = max(pos, end)
    if pos < size:
        holes.append((pos, size))
    return [(a, b) for a, b in holes if b > a]


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


def choose_zero_method(kind: str, write_zeroes_max_bytes: int, discard_zeroes_data: int) -> str:
    """How to make holes read as zeros on this target.

    BLKZEROOUT is always correct (the kernel falls back to writing zero pages) and is offloaded when
    the device has WRITE ZEROES; BLKDISCARD only when discards are guaranteed to read back zeros
    (old kernels exposed that as discard_zeroes_data; newer ones always report 0).
    """
    if kind == "file":
        return "punch"
    if write_zeroes_max_bytes > 0:
        return "zeroout"
    if discard_zeroes_data == 1:
        return "discard"
    return "zeroout"


def mbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / 1e6 / seconds, 1) if seconds > 0 else 0.0


def next_delay(delay: float, cap: float = 5.0) -> float:
    return min(cap, delay * 2)


# --------------------------------------------------------------------------------------------------
# shared pipeline state


class Control:
    """First-error capture, abort flag and per-stage busy-time accounting shared by all threads."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self.timings = dict.fromkeys(TIMING_KEYS, 0.0)
        self.counters = {"bytes_downloaded": 0, "bytes_written": 0, "bytes_zeroed": 0, "retries": 0}

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.abort.set()

    def add_time(self, key: str, seconds: float) -> None:
        with self._lock:
            self.timings[key] += seconds

    def count(self, key: str, n: int) -> None:
        with self._lock:
            self.counters[key] += n

    def check(self) -> None:
        if self.abort.is_set():
            raise Aborted()

    def put(self, q: queue.Queue, item: object) -> None:
        while True:
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                self.check()

    def get(self, q: queue.Queue) -> object:
        while True:
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                self.check()

    def spawn(self, name: str, fn, *args) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except Aborted:
                pass
            except BaseException as exc:  # noqa: BLE001 - any stage failure aborts the pipeline
                self.fail(exc)

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        return t


class BufferPool:
    """Preallocated page-aligned buffers; the pool size bounds memory and back-pressures readers."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._free: queue.Queue = queue.Queue()
        for _ in range(count):
            self._free.put(mmap.mmap(-1, size))

    def get(self, ctl: Control) -> mmap.mmap:
        return ctl.get(self._free)  # type: ignore[return-value]

    def put(self, buf: mmap.mmap) -> None:
        self._free.put(buf)


# --------------------------------------------------------------------------------------------------
# HTTP


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


# --------------------------------------------------------------------------------------------------
# target


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    return _libc


def read_sysfs_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def queue_dir(rdev: int) -> str:
    base = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    if os.path.isdir(base + "/queue"):
        return base + "/queue"
    return base + "/../queue"  # a partition: the queue belongs to its disk


class Target:
    def __init__(self, path: str, direct_io: str) -> None:
        self.path = path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise WriterError(f"target {path}: {exc.strerror}", "target_invalid") from exc
        if stat.S_ISBLK(st.st_mode):
            self.kind = "block"
        elif stat.S_ISREG(st.st_mode):
            self.kind = "file"
        else:
            raise WriterError(f"target {path} is neither a block device nor a regular file", "target_invalid")
        self.lock_fd = -1
        if self.kind == "block":
            try:  # O_EXCL on a block device fails when it (or a partition) is mounted or claimed
                self.lock_fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
            except OSError as exc:
                raise WriterError(f"target {path} is busy (mounted or in use): {exc.strerror}", "target_busy") from exc
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self.dfd = -1
        self.rdfd = -1
        if direct_io != "no":
            try:
                self.dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
                self.rdfd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as exc:
                if direct_io == "yes":
                    raise WriterError(f"O_DIRECT not supported on {path}: {exc.strerror}", "target_invalid") from exc
                self._close_direct()
        self.rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        if self.kind == "block":
            qdir = queue_dir(st.st_rdev)
            self.zero_method = choose_zero_method(
                "block",
                read_sysfs_int(qdir + "/write_zeroes_max_bytes"),
                read_sysfs_int(qdir + "/discard_zeroes_data"),
            )
        else:
            self.zero_method = "punch"

    @property
    def direct(self) -> bool:
        return self.dfd >= 0

    def _close_direct(self) -> None:
        for fd in (self.dfd, self.rdfd):
            if fd >= 0:
                os.close(fd)
        self.dfd = self.rdfd = -1

    def close(self) -> None:
        self._close_direct()
        for fd in (self.fd, self.rfd, self.lock_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.rfd = self.lock_fd = -1

    def write(self, offset: int, view: memoryview, aligned_buffer: bool) -> None:
        fd = self.fd
        if self.dfd >= 0 and aligned_buffer and offset % BLOCK == 0 and len(view) % BLOCK == 0:
            fd = self.dfd
        while len(view):
            try:
                n = os.pwrite(fd, view, offset)
            except OSError as exc:
                if fd == self.dfd and exc.errno == errno.EINVAL:
                    fd = self.fd  # this filesystem wants other alignment: buffered for this write
                    continue
                raise WriterError(f"write at offset {offset} failed: {exc.strerror}") from exc
            view = view[n:]
            offset += n

    def zero(self, start: int, end: int) -> str:
        """Make [start, end) read as zeros; returns the method that worked."""
        if self.zero_method == "punch":
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            if libc().fallocate(self.fd, mode, start, end - start) == 0:
                return "punch"
        elif self.zero_method in ("zeroout", "discard"):
            a = -(-start // BLOCK) * BLOCK  # the ioctls need logical-block alignment
            b = end // BLOCK * BLOCK
            req = BLKZEROOUT if self.zero_method == "zeroout" else BLKDISCARD
            try:
                pos = a
                while pos < b:  # bounded pieces keep each ioctl short
                    step = min(b - pos, 1 << 30)
                    fcntl.ioctl(self.fd, req, struct.pack("QQ", pos, step))
                    pos += step
                if start < a:
                    self._write_zeros(start, min(a, end))
                if b < end and b >= a:
                    self._write_zeros(max(b, start), end)
                return self.zero_method
            except OSError:
                pass
        self._write_zeros(start, end)
        return "write"

    def _write_zeros(self, start: int, end: int) -> None:
        zv = memoryview(ZEROS)
        pos = start
        while pos < end:
            n = min(end - pos, ZERO_CHUNK)
            self.write(pos, zv[:n], aligned_buffer=False)
            pos += n

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise WriterError(f"fsync failed: {exc.strerror}") from exc

    def drop_cache(self, start: int, end: int) -> None:
        # So the read-back comes from the device, not from pages we just wrote.
        try:
            os.posix_fadvise(self.rfd, start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    def read(self, offset: int, buf: mmap.mmap, length: int) -> memoryview:
        """Read ``length`` bytes at ``offset`` into ``buf`` (O_DIRECT when possible)."""
        view = memoryview(buf)
        if self.rdfd >= 0 and offset % BLOCK == 0:
            want = min(len(buf), -(-length // BLOCK) * BLOCK)
            got = 0
            try:
                while got < length:
                    n = os.preadv(self.rdfd, [view[got:want]], offset + got)
                    if n <= 0:
                        break
                    got += n
                if got >= length:
                    return view[:length]
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        got = 0
        while got < length:
            n = os.preadv(self.rfd, [view[got:length]], offset + got)
            if n <= 0:
                raise WriterError(f"short read-back at offset {offset + got}", "verify_failed")
            got += n
        return view[:length]

    def reread_partitions(self) -> str | None:
        """BLKRRPART; returns a warning or None. Not-partitionable devices are fine."""
        if self.kind != "block":
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, BLKRRPART)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOTTY):
                return None
            return f"BLKRRPART failed: {exc.strerror} (partitions in use? reboot or partprobe)"
        finally:
            os.close(fd)
        return None


class Syncer:
    """fsync after every ``interval`` bytes written, by whichever writer crosses the mark."""

    def __init__(self, target: Target, interval: int, ctl: Control) -> None:
        self.target = target
        self.interval = interval
        self.ctl = ctl
        self._lock = threading.Lock()
        self._pending = 0
        self._busy = False

    def wrote(self, n: int) -> None:
        with self._lock:
            self._pending += n
            if self._pending < self.interval or self._busy:
                return
            self._pending = 0
            self._busy = True
        t0 = time.monotonic()
        try:
            self.target.fsync()
        finally:
            self.ctl.add_time("sync", time.monotonic() - t0)
            with self._lock:
                self._busy = False


# --------------------------------------------------------------------------------------------------
# pipeline stages


class RangeTracker:
    """Knows when a range is both hash-checked and fully written, so it can be read back at once.

    Verifying while later ranges still stream overlaps the read-back with the download instead of
    adding a second pass at the end. Ranges touching the first MiB wait for the head write.
    """

    def __init__(self, ranges: list[tuple[int, int, str]], head_len: int, ready: queue.Queue | None) -> None:
        self._lock = threading.Lock()
        self._pending = [0] * len(ranges)
        self._hashed = [False] * len(ranges)
        self._head = [start < head_len for start, _, _ in ranges]
        self._ready = ready

    def add(self, idx: int) -> None:
        with self._lock:
            self._pending[idx] += 1

    def wrote(self, idx: int) -> None:
        with self._lock:
            self._pending[idx] -= 1
            self._maybe_ready(idx)

    def hashed(self, idx: int) -> None:
        with self._lock:
            self._hashed[idx] = True
            self._maybe_ready(idx)

    def _maybe_ready(self, idx: int) -> None:
        if self._ready is not None and self._hashed[idx] and not self._pending[idx] and not self._head[idx]:
            self._ready.put(idx)


class Job:
    """One write job: bmap, target, settings, and the stages that move chunks between them."""

    def __init__(self, p: dict, http_cfg: Http, bmap: dict, target: Target, ctl: Control) -> None:
        self.p = p
        self.http = http_cfg
        self.bmap = bmap
        self.target = target
        self.ctl = ctl
        self.size = bmap["image_size"]
        self.ranges = [(r["start"], r["end"], r["sha256"]) for r in bmap["ranges"]]
        self.head_len = min(HEAD_SIZE, self.size)
        self.head = mmap.mmap(-1, HEAD_SIZE)  # the image's first MiB, collected while streaming
        self.chunk = p["chunk_size"]
        self.pool = BufferPool(p["queue_depth"], self.chunk)
        self.write_q: queue.Queue = queue.Queue(maxsize=p["queue_depth"])
        self.syncer = Syncer(target, p["fsync_interval"], ctl)
        self.zero_methods: set[str] = set()
        # Early read-back needs O_DIRECT: then a finished write is on the device (or its cache) and
        # a direct read sees it; buffered writes are verified after the final fsync instead.
        self.early_verify = bool(p["verify"] and target.direct)
        self.verify_q: queue.Queue = queue.Queue()
        self.tracker = RangeTracker(self.ranges, self.head_len, self.verify_q if self.early_verify else None)
        self.verified: set[int] = set()

    # ---- writers ------------------------------------------------------------------------------

    def writer(self) -> None:
        """Takes (buffer, [(target_offset, buffer_offset, length, range_idx)]); None ends the stage."""
        while True:
            item = self.ctl.get(self.write_q)
            if item is None:
                return
            buf, segments = item
            view = memoryview(buf)
            t0 = time.monotonic()
            written = 0
            for off, boff, length, idx in segments:
                seg = view[boff : boff + length]
                if off < self.head_len:  # keep the first MiB for last
                    cut = min(length, self.head_len - off)
                    self.head[off : off + cut] = seg[:cut]
                    off, boff, length, seg = off + cut, boff + cut, length - cut, seg[cut:]
                if length:
                    self.target.write(off, seg, aligned_buffer=boff % BLOCK == 0)
                    written += length
                self.tracker.wrote(idx)
            self.ctl.add_time("write", time.monotonic() - t0)
            self.ctl.count("bytes_written", written)
            view.release()
            self.pool.put(buf)
            self.syncer.wrote(written)

    def zeroer(self) -> None:
        """Makes every hole past the first MiB read as zeros (the head is wiped/rewritten whole)."""
        data = [(s, e) for s, e, _ in self.ranges]
        for start, end in holes_of(data, self.size, skip_below=self.head_len):
            self.ctl.check()
            t0 = time.monotonic()
            self.zero_methods.add(self.target.zero(start, end))
            self.ctl.add_time("zero", time.monotonic() - t0)
            self.ctl.count("bytes_zeroed", end - start)

    # ---- raw path: only data ranges, fetched in parallel ---------------------------------------

    def range_fetcher(self, work: queue.Queue) -> None:
        client = HttpClient(self.http, self.ctl)
        try:
            while True:
                try:
                    idx = work.get_nowait()
                except queue.Empty:
                    return
                self._fetch_range(client, idx)
        finally:
            client.close()

    def _fetch_range(self, client: HttpClient, idx: int) -> None:
        start, end, digest = self.ranges[idx]
        reader = RangeReader(client, start, end)
        hasher = hashlib.sha256()
        pos = start
        while pos < end:
            buf = self.pool.get(self.ctl)
            view = memoryview(buf)
            n = min(self.chunk, end - pos)
            t0 = time.monotonic()
            got = reader.readinto(view[:n])
            t1 = time.monotonic()
            if got != n:
                raise DownloadError(f"image shorter than its bmap: range {fmt_range(start, end)} ends at {pos + got}")
            hasher.update(view[:n])
            self.ctl.add_time("download", t1 - t0)
            self.ctl.add_time("hash", time.monotonic() - t1)
            view.release()
            self.tracker.add(idx)
            self.ctl.put(self.write_q, (buf, [(pos, 0, n, idx)]))
            pos += n
        check_range(start, end, digest, hasher.hexdigest())
        self.tracker.hashed(idx)

    def run_ranges(self) -> None:
        work: queue.Queue = queue.Queue()
        for idx in range(len(self.ranges)):
            work.put(idx)
        nfetch = max(1, min(self.p["download_workers"], len(self.ranges)))
        producers = [self.ctl.spawn(f"fetch{i}", self.range_fetcher, work) for i in range(nfetch)]
        self._run_with(producers)

    # ---- stream path: the whole image in order (zstd, or a server without Range) ---------------

    def run_stream(self, compressed: bool) -> None:
        route_q: queue.Queue = queue.Queue(maxsize=self.p["queue_depth"])
        producers = []
        if compressed:
            comp_q: queue.Queue = queue.Queue(maxsize=16)
            producers.append(self.ctl.spawn("download", self.downloader, comp_q))
            producers.append(self.ctl.spawn("decompress", self.decompressor, comp_q, route_q))
        else:
            producers.append(self.ctl.spawn("download", self.raw_streamer, route_q))
        producers.append(self.ctl.spawn("hash", self.router, route_q))
        self._run_with(producers)

    def downloader(self, comp_q: queue.Queue) -> None:
        client = HttpClient(self.http, self.ctl)
        reader = RangeReader(client, 0, None)
        try:
            while True:
                t0 = time.monotonic()
                data = reader.read(MiB)
                self.ctl.add_time("download", time.monotonic() - t0)
                self.ctl.put(comp_q, data)
                if not data:
                    return
        finally:
            client.close()

    def decompressor(self, comp_q: queue.Queue, route_q: queue.Queue) -> None:
        try:
            import zstandard
        except ImportError as exc:
            raise WriterError(
                "compression=zstd needs the python3 zstandard package on the target", "bad_params"
            ) from exc
        source = QueueSource(comp_q, self.ctl)
        pos = 0
        try:
            dctx = zstandard.ZstdDecompressor()
            try:
                reader = dctx.stream_reader(source, read_size=MiB, read_across_frames=True)
            except TypeError:  # zstandard < 0.15: a single frame is all we can read
                reader = dctx.stream_reader(source, read_size=MiB)
            while True:
                buf = self.pool.get(self.ctl)
                view = memoryview(buf)
                t0 = time.monotonic()
                waited0 = source.waited
                n = 0
                while n < len(view):  # fill whole chunks so downstream sees block-aligned pieces
                    got = reader.readinto(view[n:])
                    if not got:
                        break
                    n += got
                self.ctl.add_time("decompress", time.monotonic() - t0 - (source.waited - waited0))
                view.release()
                if n == 0:
                    self.pool.put(buf)
                    break
                if pos + n > self.size:
                    raise ImageCorrupt(f"image corrupt: stream decompresses to more than image_size {self.size}")
                self.ctl.put(route_q, (buf, pos, n))
                pos += n
        except zstandard.ZstdError as exc:
            raise ImageCorrupt(f"image corrupt: zstd stream invalid at byte {pos}: {exc}") from exc
        if pos != self.size:
            raise ImageCorrupt(f"image corrupt: stream decompressed to {pos} bytes, bmap says {self.size}")
        self.ctl.put(route_q, None)

    def raw_streamer(self, route_q: queue.Queue) -> None:
        client = HttpClient(self.http, self.ctl)
        reader = RangeReader(client, 0, None)
        pos = 0
        try:
            while True:
                buf = self.pool.get(self.ctl)
                view = memoryview(buf)
                t0 = time.monotonic()
                n = reader.readinto(view)
                self.ctl.add_time("download", time.monotonic() - t0)
                view.release()
                if n == 0:
                    self.pool.put(buf)
                    break
                if pos + n > self.size:
                    raise ImageCorrupt(f"image corrupt: content longer than image_size {self.size}")
                self.ctl.put(route_q, (buf, pos, n))
                pos += n
        finally:
            client.close()
        if pos != self.size:
            raise ImageCorrupt(f"image corrupt: content is {pos} bytes, bmap says {self.size}")
        self.ctl.put(route_q, None)

    def router(self, route_q: queue.Queue) -> None:
        """Hash stage of the stream path: per-range sha256, holes must be zero, emit write segments."""
        idx = 0
        hasher = hashlib.sha256()
        while True:
            item = self.ctl.get(route_q)
            if item is None:
                break
            buf, base, n = item
            t0 = time.monotonic()
            segments = []
            pos, stop = base, base + n
            while pos < stop:
                if idx < len(self.ranges) and self.ranges[idx][0] <= pos:
                    start, end, digest = self.ranges[idx]
                    cut = min(end, stop)
                    hasher.update(memoryview(buf)[pos - base : cut - base])
                    segments.append((pos, pos - base, cut - pos, idx))
                    self.tracker.add(idx)
                    if cut == end:
                        check_range(start, end, digest, hasher.hexdigest())
                        self.tracker.hashed(idx)
                        hasher = hashlib.sha256()
                        idx += 1
                    pos = cut
                else:
                    cut = min(stop, self.ranges[idx][0]) if idx < len(self.ranges) else stop
                    if not chunk_is_zero(buf, pos - base, cut - base):
                        raise ImageCorrupt(
                            f"image corrupt: data in hole {fmt_range(pos, cut)}, which the bmap says is empty",
                            bad_range={"start": pos, "end": cut},
                        )
                    pos = cut
            self.ctl.add_time("hash", time.monotonic() - t0)
            if segments:
                self.ctl.put(self.write_q, (buf, segments))
            else:
                self.pool.put(buf)
        if idx != len(self.ranges):
            start, end, _ = self.ranges[idx]
            raise ImageCorrupt(f"image corrupt: stream ended before range {fmt_range(start, end)}")

    # ---- orchestration ------------------------------------------------------------------------

    def _run_with(self, producers: list[threading.Thread]) -> None:
        zeroer = self.ctl.spawn("zero", self.zeroer)
        writers = [self.ctl.spawn(f"write{i}", self.writer) for i in range(self.p["write_workers"])]
        nverify = self.p["verify_workers"] if self.early_verify else 0
        verifiers = [self.ctl.spawn(f"verify{i}", self.verifier, self.verify_q) for i in range(nverify)]
        for t in producers:
            join(t, self.ctl)
        if not self.ctl.abort.is_set():
            for _ in writers:
                self.ctl.put(self.write_q, None)
        for t in writers + [zeroer]:
            join(t, self.ctl)
        if not self.ctl.abort.is_set():
            for _ in verifiers:
                self.verify_q.put(None)
        for t in verifiers:
            join(t, self.ctl)
        if self.ctl.error is not None:
            raise self.ctl.error

    def verifier(self, work: queue.Queue) -> None:
        buf = mmap.mmap(-1, self.chunk)  # page-aligned, for O_DIRECT reads
        while True:
            idx = self.ctl.get(work)
            if idx is None:
                return
            self.verify_range(buf, idx)

    def verify_range(self, buf: mmap.mmap, idx: int) -> None:
        """Read a range back from the device and compare its sha256."""
        start, end, digest = self.ranges[idx]
        t0 = time.monotonic()
        self.target.drop_cache(start, end)
        hasher = hashlib.sha256()
        pos = start
        while pos < end:
            self.ctl.check()
            n = min(self.chunk, end - pos)
            hasher.update(self.target.read(pos, buf, n))
            pos += n
        self.ctl.add_time("verify", time.monotonic() - t0)
        actual = hasher.hexdigest()
        if actual != digest:
            raise WriterError(
                f"verify failed: range {fmt_range(start, end)} reads back as {actual}, expected {digest}",
                "verify_failed",
                bad_range={"start": start, "end": end},
            )
        self.verified.add(idx)

    def verify(self, indices: list[int]) -> None:
        """Read back the given ranges (after fsync + cache drop, so from the device) in parallel."""
        work: queue.Queue = queue.Queue()
        n = max(1, min(self.p["verify_workers"], len(indices)))
        for idx in indices + [None] * n:
            work.put(idx)
        threads = [self.ctl.spawn(f"verify{i}", self.verifier, work) for i in range(n)]
        for t in threads:
            join(t, self.ctl)
        if self.ctl.error is not None:
            raise self.ctl.error

    def timed_sync(self) -> None:
        t0 = time.monotonic()
        self.target.fsync()
        self.ctl.add_time("sync", time.monotonic() - t0)

    def wipe_head(self) -> None:
        """Zero the target's first MiB first: a half-written disk must not boot an old loader."""
        if self.head_len:
            self.target.write(0, memoryview(ZEROS)[: self.head_len], aligned_buffer=False)
            self.target.fsync()

    def write_head(self) -> None:
        if not self.head_len:
            return
        t0 = time.monotonic()
        self.target.write(0, memoryview(self.head)[: self.head_len], aligned_buffer=True)
        self.ctl.add_time("write", time.monotonic() - t0)
        self.ctl.count("bytes_written", sum(min(e, self.head_len) - s for s, e, _ in self.ranges if s < self.head_len))


class QueueSource:
    """File-like ``read(n)`` over the download queue, for zstandard's stream_reader."""

    def __init__(self, q: queue.Queue, ctl: Control) -> None:
        self.q = q
        self.ctl = ctl
        self.rest = b""
        self.eof = False
        self.waited = 0.0  # time blocked on the network, excluded from "decompress"

    def read(self, n: int = -1) -> bytes:
        if not self.rest and not self.eof:
            t0 = time.monotonic()
            data = self.ctl.get(self.q)
            self.waited += time.monotonic() - t0
            if not data:
                self.eof = True
            else:
                self.rest = data
        if n is None or n < 0:
            n = len(self.rest)
        out, self.rest = self.rest[:n], self.rest[n:]
        return out


def chunk_is_zero(buf: mmap.mmap, start: int, end: int) -> bool:
    pos = start
    while pos < end:
        step = min(end - pos, ZERO_CHUNK)
        if buf[pos : pos + step] != ZEROS[:step]:  # mmap slice -> bytes, so this is a memcmp
            return False
        pos += step
    return True


def check_range(start: int, end: int, expected: str, actual: str) -> None:
    if actual != expected:
        raise ImageCorrupt(
            f"image corrupt: range {fmt_range(start, end)} sha256 mismatch (expected {expected}, got {actual})",
            bad_range={"start": start, "end": end, "expected": expected, "actual": actual},
        )


def join(t: threading.Thread, ctl: Control) -> None:
    while t.is_alive():
        t.join(0.2)


# --------------------------------------------------------------------------------------------------
# entry points


def build_http(p: dict) -> Http:
    headers = {str(k): str(v) for k, v in (p.get("headers") or {}).items()}
    if p.get("token"):
        headers["Authorization"] = f"Bearer {p['token']}"
    headers.setdefault("User-Agent", "provisioner-image-write/1")
    return Http(p["url"], headers, p["timeout"], p["retry_timeout"], p["validate_certs"], p.get("ca_path"))


def load_bmap(p: dict, http_cfg: Http, ctl: Control) -> dict:
    bmap = p.get("bmap")
    if bmap is None:
        bmap = fetch_json(http_cfg.with_url(p["bmap_url"]), ctl)
    problems = validate_bmap(bmap)
    if problems:
        raise WriterError("invalid bmap: " + "; ".join(problems[:5]), "bmap_invalid")
    if p.get("sha256") and p["sha256"].lower() != bmap["sha256"].lower():
        raise WriterError(f"bmap is for image sha256 {bmap['sha256']}, expected {p['sha256']}", "bmap_invalid")
    return bmap


def probe(http_cfg: Http, ctl: Control) -> tuple[bool, int | None]:
    """One tiny request before touching the target: auth, existence, Range support, size."""
    client = HttpClient(http_cfg, ctl)
    reader = RangeReader(client, 0, None)
    try:
        while True:
            try:
                resp, total = client.open(0, 1)
                break
            except (OSError, http.client.HTTPException) as exc:
                reader._transient(exc)
        ranged = resp.status == 206
        if ranged:
            resp.read()
        client.close()  # a 200 would stream the whole image: just drop that connection
        return ranged, total
    finally:
        client.close()


def check_params(p: dict) -> None:
    if p["chunk_size"] < MiB or p["chunk_size"] % MiB:
        raise WriterError("chunk_size must be a positive multiple of 1 MiB", "bad_params")
    for key in ("download_workers", "write_workers", "verify_workers", "queue_depth"):
        if p[key] < 1:
            raise WriterError(f"{key} must be >= 1", "bad_params")
    if p["queue_depth"] < 2:
        raise WriterError("queue_depth must be >= 2", "bad_params")


def run(p: dict, check_mode: bool = False) -> dict:
    t_start = time.monotonic()
    ctl = Control()
    result: dict = {"changed": False}
    try:
        check_params(p)
        http_cfg = build_http(p)
        bmap = load_bmap(p, http_cfg, ctl)
        ranged, total = probe(http_cfg, ctl)
        compressed = p["compression"] == "zstd"
        if not compressed and total is not None and total != bmap["image_size"]:
            raise ImageCorrupt(f"image corrupt: served content is {total} bytes, bmap says {bmap['image_size']}")
        target = Target(p["target"], p["direct_io"])
        try:
            if bmap["image_size"] > target.size:
                raise WriterError(
                    f"image ({bmap['image_size']} bytes) is larger than target {p['target']} ({target.size} bytes)",
                    "target_too_small",
                )
            mode = "zstd-stream" if compressed else ("ranges" if ranged else "raw-stream")
            result.update(
                image_size=bmap["image_size"],
                ranges=len(bmap["ranges"]),
                mode=mode,
                direct_io=target.direct,
                target_kind=target.kind,
            )
            if check_mode:
                result["changed"] = True
                return result
            job = Job(p, http_cfg, bmap, target, ctl)
            result["changed"] = True
            job.wipe_head()
            if mode == "ranges":
                job.run_ranges()
            else:
                job.run_stream(compressed)
            job.timed_sync()
            head_ranges = [i for i, r in enumerate(job.ranges) if r[0] < job.head_len]
            if p["verify"]:  # whatever was not read back early (buffered I/O: all of it)
                job.verify([i for i in range(len(job.ranges)) if i not in job.verified and i not in head_ranges])
            job.write_head()
            job.timed_sync()
            if p["verify"] and head_ranges:
                try:
                    job.verify(head_ranges)
                except WriterError:
                    job.wipe_head()  # the disk must not boot a head whose read-back is wrong
                    raise
            warning = target.reread_partitions()
            if warning:
                result.setdefault("warnings", []).append(warning)
            result["zero_method"] = ",".join(sorted(job.zero_methods)) or target.zero_method
        finally:
            target.close()
    except WriterError as exc:
        result.update(failed=True, msg=str(exc), error=exc.code, image_corrupt=exc.code == "image_corrupt")
        result.update(exc.details)
    except OSError as exc:
        result.update(failed=True, msg=f"I/O error: {exc}", error="write_failed", image_corrupt=False)
    except Exception as exc:  # a bug: report it with its traceback instead of a bare module crash
        result.update(
            failed=True,
            msg=f"internal error: {exc!r}",
            error="internal_error",
            image_corrupt=False,
            exception=traceback.format_exc(),
        )
    finally:
        ctl.abort.set()  # stop any straggler thread
        total_s = time.monotonic() - t_start
        ctl.timings["total"] = total_s
        result["timings"] = {k: round(v, 3) for k, v in ctl.timings.items()}
        result.update(ctl.counters)
    if not result.get("failed"):
        result["throughput_mbps"] = mbps(result.get("image_size", 0), total_s)
        result["data_throughput_mbps"] = mbps(result.get("bytes_written", 0), total_s)
    return result


ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    token=dict(type="str", no_log=True),
    headers=dict(type="dict", no_log=True),
    bmap=dict(type="dict"),
    bmap_url=dict(type="str"),
    compression=dict(type="str", default="none", choices=["none", "zstd"]),
    sha256=dict(type="str"),
    target=dict(type="path", required=True),
    verify=dict(type="bool", default=True),
    download_workers=dict(type="int", default=4),
    write_workers=dict(type="int", default=2),
    verify_workers=dict(type="int", default=4),
    queue_depth=dict(type="int", default=8),
    chunk_size=dict(type="int", default=4 * MiB),
    fsync_interval=dict(type="int", default=64 * MiB),
    direct_io=dict(type="str", default="auto", choices=["auto", "yes", "no"]),
    timeout=dict(type="float", default=30.0),
    retry_timeout=dict(type="float", default=300.0),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[("bmap", "bmap_url")],
        mutually_exclusive=[("bmap", "bmap_url")],
        supports_check_mode=True,
    )
    result = run(module.params, check_mode=module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
