"""The stages of one image write and the threads that run them.

Download (parallel Range fetches, or one stream, zstd-decompressed in its own thread), per-range
sha256 check against the bmap, writes, hole zeroing and read-back verification, joined by bounded
queues of preallocated page-aligned buffers.

Part of the provisioner_image_write module (playbooks/library); runs on the target host, stdlib only
(plus zstandard for compressed images, imported lazily).
"""

from __future__ import annotations

import hashlib
import mmap
import queue
import threading
import time

from ansible.module_utils.prov_bmap import fmt_range, holes_of
from ansible.module_utils.prov_image_control import Control, DownloadError, ImageCorrupt, MiB, WriterError
from ansible.module_utils.prov_image_http import Http, HttpClient, RangeReader
from ansible.module_utils.prov_image_target import (
    BLOCK,
    ZERO_CHUNK,
    ZEROS,
    Syncer,
    Target,
    buffer_address,
    same_bytes,
)

HEAD_SIZE = MiB  # written last: holds MBR / GPT header / boot loader


class BufferPool:
    """Preallocated page-aligned buffers; the pool size bounds memory and back-pressures readers."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._free: queue.Queue = queue.Queue()
        self.address: dict[int, int] = {}  # id(buffer) -> its address, for memcmp
        self._anchors = []
        for _ in range(count):
            buf = mmap.mmap(-1, size)
            addr, anchor = buffer_address(buf)
            self.address[id(buf)] = addr
            self._anchors.append(anchor)
            self._free.put(buf)

    def get(self, ctl: Control) -> mmap.mmap:
        return ctl.get(self._free)  # type: ignore[return-value]

    def put(self, buf: mmap.mmap) -> None:
        self._free.put(buf)


class RangeTracker:
    """Knows when a range is verified: its sha256 matched the bmap while it streamed in, and every
    chunk of it read back from the device equal to the buffer it was written from (the buffer that
    was hashed). Both together say the device holds bytes whose sha256 is the bmap's, without
    hashing the range a second time.

    A chunk that could not be compared at once (written without O_DIRECT, so an immediate read
    could come from the page cache) marks its range "late": read back and re-hashed after the final
    fsync instead. A range touching the first MiB waits for the head too: its part there is written
    last, from the head buffer, and read back and compared after that write (``head_checked``).
    """

    def __init__(self, ranges: list[tuple[int, int, str]], head_len: int) -> None:
        self._lock = threading.Lock()
        self._pending = [0] * len(ranges)
        self._hashed = [False] * len(ranges)
        self._late = [False] * len(ranges)
        self._in_head = [start < head_len for start, _, _ in ranges]
        self.verified: set[int] = set()

    def add(self, idx: int) -> None:
        with self._lock:
            self._pending[idx] += 1

    def done(self, idx: int, compared: bool) -> None:
        """One chunk of range ``idx`` is written and, when ``compared``, read back equal."""
        with self._lock:
            self._pending[idx] -= 1
            if not compared:
                self._late[idx] = True
            self._settle(idx)

    def hashed(self, idx: int) -> None:
        with self._lock:
            self._hashed[idx] = True
            self._settle(idx)

    def head_checked(self) -> None:
        """The first MiB was written and read back equal to the head buffer."""
        with self._lock:
            for idx, in_head in enumerate(self._in_head):
                if in_head:
                    self._in_head[idx] = False
                    self._settle(idx)

    def _settle(self, idx: int) -> None:
        if self._hashed[idx] and not self._pending[idx] and not self._late[idx] and not self._in_head[idx]:
            self.verified.add(idx)


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
        self.head_direct = False  # write_head went to the device with O_DIRECT
        self.chunk = p["chunk_size"]
        self.pool = BufferPool(p["queue_depth"], self.chunk)
        self.write_q: queue.Queue = queue.Queue(maxsize=p["queue_depth"])
        self.syncer = Syncer(target, p["fsync_interval"], ctl)
        self.zero_methods: set[str] = set()
        # Early read-back needs O_DIRECT: then a finished write is on the device (or its cache) and
        # a direct read sees it; buffered writes are verified after the final fsync instead.
        self.early_verify = bool(p["verify"] and target.direct)
        self.check_q: queue.Queue = queue.Queue()  # written buffers waiting for their read-back
        self.tracker = RangeTracker(self.ranges, self.head_len)
        self.verified = self.tracker.verified

    # ---- writers ------------------------------------------------------------------------------

    def writer(self) -> None:
        """Stream path: takes (buffer, [(target_offset, buffer_offset, length, range_idx)]); None
        ends the stage. With early verification the buffer then goes to a checker, which reads the
        chunk back and returns the buffer to the pool; otherwise it goes back to the pool at once.
        """
        while True:
            item = self.ctl.get(self.write_q)
            if item is None:
                return
            buf, segments = item
            done = self.write_segments(buf, segments)
            if self.early_verify:
                self.ctl.put(self.check_q, (buf, done))
            else:
                for _, _, _, idx, _ in done:
                    self.tracker.done(idx, compared=False)
                self.pool.put(buf)

    def write_segments(self, buf: mmap.mmap, segments: list) -> list:
        """Write each (target_offset, buffer_offset, length, range_idx) of ``buf``, except the part
        in the first MiB, which is kept for last. Returns what was written, each with whether it
        went to the device with O_DIRECT: (target_offset, buffer_offset, length, range_idx, direct).
        """
        view = memoryview(buf)
        t0 = time.monotonic()
        written = buffered = 0
        done = []
        for off, boff, length, idx in segments:
            seg = view[boff : boff + length]
            if off < self.head_len:  # keep the first MiB for last
                cut = min(length, self.head_len - off)
                self.head[off : off + cut] = seg[:cut]
                off, boff, length, seg = off + cut, boff + cut, length - cut, seg[cut:]
            direct = True
            if length:
                direct = self.target.write(off, seg, aligned_buffer=boff % BLOCK == 0)
                written += length
                buffered += 0 if direct else length
            done.append((off, boff, length, idx, direct))
        self.ctl.add_time("write", time.monotonic() - t0)
        self.ctl.count("bytes_written", written)
        view.release()
        if buffered:  # O_DIRECT writes leave no dirty pages: only buffered ones need periodic fsync
            self.syncer.wrote(buffered)
        return done

    def compare_segments(self, addr: int, rbuf: mmap.mmap, raddr: int, done: list) -> None:
        """Read back what ``write_segments`` wrote with O_DIRECT and compare it, byte for byte, with
        the buffer at ``addr`` it was written from; tells the tracker."""
        t0 = time.monotonic()
        try:
            for off, boff, length, idx, direct in done:
                if length and direct:
                    self.target.read(off, rbuf, length)
                    if not same_bytes(addr + boff, raddr, length):
                        start, end, _ = self.ranges[idx]
                        raise WriterError(
                            f"verify failed: range {fmt_range(start, end)} reads back different from what was "
                            f"written at {fmt_range(off, off + length)}",
                            "verify_failed",
                            bad_range={"start": start, "end": end},
                        )
                self.tracker.done(idx, compared=direct)
        finally:
            self.ctl.add_time("verify", time.monotonic() - t0)

    def checker(self) -> None:
        """Stream path: reads each written chunk back and compares it (compare_segments), then
        returns its buffer to the pool; None ends the stage."""
        rbuf = mmap.mmap(-1, self.chunk)  # page-aligned, for O_DIRECT reads
        raddr, anchor = buffer_address(rbuf)
        while True:
            item = self.ctl.get(self.check_q)
            if item is None:
                return
            buf, done = item
            try:
                self.compare_segments(self.pool.address[id(buf)], rbuf, raddr, done)
            finally:
                self.pool.put(buf)

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

    def range_worker(self, work: queue.Queue) -> None:
        """Takes whole ranges off ``work`` and copies each: download, hash, write, read back, chunk
        by chunk in this one thread, with its own two buffers. Several workers run side by side, so
        one hashes while another waits for the network or the device; nothing is handed between
        threads (on a busy machine every hand-off costs a wake-up)."""
        client = HttpClient(self.http, self.ctl)
        size = self.p["range_chunk_size"]
        buf = mmap.mmap(-1, size)  # page-aligned: O_DIRECT straight from it
        addr, anchor = buffer_address(buf)
        rbuf = mmap.mmap(-1, size) if self.early_verify else None
        raddr, ranchor = buffer_address(rbuf) if rbuf is not None else (0, None)
        try:
            while True:
                try:
                    idx = work.get_nowait()
                except queue.Empty:
                    return
                self._copy_range(client, idx, buf, addr, rbuf, raddr)
        finally:
            client.close()

    def _copy_range(
        self, client: HttpClient, idx: int, buf: mmap.mmap, addr: int, rbuf: mmap.mmap | None, raddr: int
    ) -> None:
        start, end, digest = self.ranges[idx]
        reader = RangeReader(client, start, end)
        hasher = hashlib.sha256()
        pos = start
        while pos < end:
            view = memoryview(buf)
            n = min(len(buf), end - pos)
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
            done = self.write_segments(buf, [(pos, 0, n, idx)])
            if rbuf is not None:
                self.compare_segments(addr, rbuf, raddr, done)
            else:
                self.tracker.done(idx, compared=False)
            pos += n
        check_range(start, end, digest, hasher.hexdigest())
        self.tracker.hashed(idx)

    def run_ranges(self) -> None:
        work: queue.Queue = queue.Queue()
        for idx in range(len(self.ranges)):
            work.put(idx)
        nfetch = max(1, min(self.p["download_workers"], len(self.ranges)))
        producers = [self.ctl.spawn(f"range{i}", self.range_worker, work) for i in range(nfetch)]
        self._run_with(producers, stages=False)

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

    def _run_with(self, producers: list[threading.Thread], stages: bool = True) -> None:
        """Run the producers with the zeroer and (``stages``: the stream path) writer and checker
        threads; the range workers write and check by themselves."""
        zeroer = self.ctl.spawn("zero", self.zeroer)
        writers = [self.ctl.spawn(f"write{i}", self.writer) for i in range(self.p["write_workers"] if stages else 0)]
        nverify = self.p["verify_workers"] if self.early_verify and stages else 0
        checkers = [self.ctl.spawn(f"check{i}", self.checker) for i in range(nverify)]
        for t in producers:
            join(t, self.ctl)
        if not self.ctl.abort.is_set():
            for _ in writers:
                self.ctl.put(self.write_q, None)
        for t in writers + [zeroer]:
            join(t, self.ctl)
        if not self.ctl.abort.is_set():
            for _ in checkers:
                self.check_q.put(None)
        for t in checkers:
            join(t, self.ctl)
        if self.ctl.error is not None:
            raise self.ctl.error

    def verifier(self, work: queue.Queue) -> None:
        """Late read-back: whole ranges re-read and re-hashed (buffered writes, the head's ranges)."""
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
        self.head_direct = self.target.write(0, memoryview(self.head)[: self.head_len], aligned_buffer=True)
        self.ctl.add_time("write", time.monotonic() - t0)
        self.ctl.count("bytes_written", sum(min(e, self.head_len) - s for s, e, _ in self.ranges if s < self.head_len))

    def check_head(self) -> None:
        """Read the first MiB back (after write_head and fsync) and compare it with the head buffer,
        whose bytes were hashed with their ranges. The head ranges' other chunks were compared as
        they were written, so a range touching the head is not read and hashed whole a second time.
        A head written without O_DIRECT is left to ``verify`` (re-read, re-hashed)."""
        if not (self.early_verify and self.head_len and self.head_direct):
            return
        t0 = time.monotonic()
        rbuf = mmap.mmap(-1, HEAD_SIZE)  # page-aligned, for O_DIRECT
        raddr, ranchor = buffer_address(rbuf)
        haddr, hanchor = buffer_address(self.head)
        try:
            self.target.drop_cache(0, self.head_len)
            self.target.read(0, rbuf, self.head_len)
            if not same_bytes(haddr, raddr, self.head_len):
                at = next(i for i in range(self.head_len) if rbuf[i] != self.head[i])
                start, end = next(((s, e) for s, e, _ in self.ranges if s <= at < e), (0, self.head_len))
                raise WriterError(
                    f"verify failed: range {fmt_range(start, end)} reads back different from what was written "
                    f"(first MiB, byte {at})",
                    "verify_failed",
                    bad_range={"start": start, "end": end},
                )
        finally:
            self.ctl.add_time("verify", time.monotonic() - t0)
        self.tracker.head_checked()


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
