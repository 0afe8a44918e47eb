"""Block maps ("bmaps") of raw disk images.

A bmap says which byte ranges of a raw image hold data, with a sha256 per range, so a writer can
fetch and write only those ranges and make every other byte read as zero on the target.

Shape (JSON-serialisable, ``end`` exclusive, all numbers in bytes)::

    {"version": 1, "block_size": 4096, "image_size": N, "sha256": "<hex of the full raw content>",
     "ranges": [{"start": 0, "end": 1048576, "sha256": "<hex>"}, ...]}

How ranges are chosen (documented coarsening, both knobs are arguments):

* allocated extents come from SEEK_DATA/SEEK_HOLE, then every 4096-byte block that is all zeros is
  a hole too, so a fully allocated but mostly empty image still maps small;
* two data runs separated by fewer than ``merge_gap`` zero bytes (default 256 KiB) become one range
  whose hash covers the zeros in between: one HTTP request costs more than fetching a few zero
  blocks, and a writer punching thousands of tiny holes is slower than writing them;
* no range crosses a multiple of ``max_range`` (default 16 MiB), so ranges are independent units of
  parallel work and of error reporting, and a range never straddles the first MiB boundary (which
  writers keep for last).

Everything is streaming: memory is bounded by one read chunk (4 MiB) plus the range list.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# The bmap rules live in the pure core, shared with the image writer module, which ships that very
# file to the target hosts (playbooks/module_utils/prov_bmap.py); re-exported here (``X as X``).
from provisioner.core.bmap_rules import BMAP_VERSION as BMAP_VERSION
from provisioner.core.bmap_rules import fmt_range as fmt_range
from provisioner.core.bmap_rules import holes_of as holes_of
from provisioner.core.bmap_rules import is_hex_digest as is_hex_digest
from provisioner.core.bmap_rules import validate_bmap as validate_bmap

BLOCK_SIZE = 4096
MiB = 1 << 20
CHUNK_SIZE = 4 * MiB
DEFAULT_MERGE_GAP = 256 * 1024
DEFAULT_MAX_RANGE = 16 * MiB

Range = tuple[int, int]

# bytes == bytes is a memcmp; comparing a memoryview element-wise is ~40x slower, so zero checks
# always compare real bytes objects against this buffer.
_ZEROS = bytes(CHUNK_SIZE)


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes | bytearray:
    return data if isinstance(data, bytes | bytearray) else bytes(data)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True when every byte is zero (empty counts as zero)."""
    buf = _as_bytes(data)
    n = len(buf)
    pos = 0
    while pos < n:
        step = min(n - pos, len(_ZEROS))
        if buf[pos : pos + step] != _ZEROS[:step]:
            return False
        pos += step
    return True


def nonzero_block_runs(data: bytes | bytearray | memoryview, block_size: int = BLOCK_SIZE) -> list[Range]:
    """Runs of blocks (offsets relative to ``data``) that contain at least one non-zero byte.

    Adjacent non-zero blocks are merged; the last block may be short.
    """
    buf = _as_bytes(data)
    n = len(buf)
    if n <= len(_ZEROS) and buf == _ZEROS[:n]:
        return []  # fast path: holes that were allocated (or decompressed) as zeros
    zero_block = _ZEROS[:block_size]
    runs: list[Range] = []
    run_start = -1
    for off in range(0, n, block_size):
        end = min(off + block_size, n)
        zero = buf[off:end] == zero_block[: end - off]
        if not zero and run_start < 0:
            run_start = off
        elif zero and run_start >= 0:
            runs.append((run_start, off))
            run_start = -1
    if run_start >= 0:
        runs.append((run_start, n))
    return runs


def merge_ranges(ranges: Iterable[Range], gap: int = 0) -> list[Range]:
    """Sort and merge ranges that overlap, touch, or are separated by at most ``gap`` bytes."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def split_ranges(ranges: Iterable[Range], max_len: int) -> list[Range]:
    """Cut ranges at every absolute multiple of ``max_len`` (aligned chunks, not equal pieces)."""
    out: list[Range] = []
    for start, end in ranges:
        while start < end:
            cut = min(end, (start // max_len + 1) * max_len)
            out.append((start, cut))
            start = cut
    return out


def align_ranges(ranges: Iterable[Range], block_size: int, size: int) -> Iterator[Range]:
    """Round ranges outwards to the block grid, clip to ``size`` and merge what then overlaps.

    Streaming: input must be sorted (as SEEK_DATA yields it).
    """
    cur: Range | None = None
    for start, end in ranges:
        start = start // block_size * block_size
        end = min(size, -(-end // block_size) * block_size)
        if start >= end:
            continue
        if cur is not None and start <= cur[1]:
            cur = (cur[0], max(cur[1], end))
            continue
        if cur is not None:
            yield cur
        cur = (start, end)
    if cur is not None:
        yield cur


def data_extents(fd: int, size: int) -> Iterator[Range]:
    """Allocated extents of an open file via SEEK_DATA/SEEK_HOLE.

    Falls back to one extent covering the file when the filesystem cannot tell (then zero-block
    detection alone finds the holes).
    """
    try:
        first = os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data at all: fully sparse
            return
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            if size:
                yield (0, size)
            return
        raise
    pos = first
    while pos < size:
        end = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
        yield (pos, end)
        try:
            pos = os.lseek(fd, end, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise


@dataclass
class _OpenRange:
    start: int
    end: int
    hasher: Any = field(default_factory=hashlib.sha256)


class _BackgroundHasher:
    """sha256 computed by one helper thread, in submission order.

    The whole-image hash and the range hashes cover the same bytes; hashlib releases the GIL, so
    running them on two cores halves publish time. At most ``depth`` chunks wait (bounded memory).
    """

    def __init__(self, depth: int = 4) -> None:
        self._hash = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bmap-sha256")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def _submit(self, fn: Any, *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def update(self, data: bytes) -> None:
        """``data`` must be immutable: the helper reads it later."""
        self._submit(self._hash.update, data)

    def update_zeros(self, length: int) -> None:
        self._submit(_hash_zeros, self._hash, length)

    def hexdigest(self) -> str:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        return self._hash.hexdigest()


class BmapBuilder:
    """Builds a bmap from the image content fed strictly in order.

    ``feed`` takes real bytes (zero blocks inside are detected), ``feed_zeros`` takes a hole without
    any bytes. Every call but the last must keep the position on the block grid so blocks line up.
    """

    def __init__(
        self,
        *,
        block_size: int = BLOCK_SIZE,
        merge_gap: int = DEFAULT_MERGE_GAP,
        max_range: int = DEFAULT_MAX_RANGE,
    ) -> None:
        if max_range % block_size or max_range < MiB:
            raise ValueError("max_range must be a multiple of block_size and at least 1 MiB")
        self.block_size = block_size
        self.merge_gap = merge_gap
        self.max_range = max_range
        self.size = 0
        self._total = _BackgroundHasher()
        self._ranges: list[dict[str, Any]] = []
        self._cur: _OpenRange | None = None
        self._finished = False

    def _check_grid(self) -> None:
        if self._finished:
            raise ValueError("builder already finished")
        if self.size % self.block_size:
            raise ValueError("only the last piece of an image may end off the block grid")

    def feed(self, data: bytes | bytearray | memoryview) -> list[Range]:
        """Consume the next ``len(data)`` bytes; returns the absolute data runs found in them."""
        if not len(data):
            return []
        self._check_grid()
        buf = data if isinstance(data, bytes) else bytes(data)  # immutable: hashed in the background
        base = self.size
        self._total.update(buf)
        runs = nonzero_block_runs(buf, self.block_size)
        view = memoryview(buf)
        for a, b in runs:
            self._add_data(base + a, view[a:b])
        self.size += len(buf)
        return [(base + a, base + b) for a, b in runs]

    def feed_zeros(self, length: int) -> None:
        """Consume a hole of ``length`` zero bytes without materialising it."""
        if not length:
            return
        self._check_grid()
        self._total.update_zeros(length)
        self.size += length

    def _add_data(self, start: int, view: memoryview) -> None:
        end = start + len(view)
        pos = start
        while pos < end:
            slot = pos // self.max_range
            piece_end = min(end, (slot + 1) * self.max_range)
            cur = self._cur
            if cur is not None and pos - cur.end <= self.merge_gap and cur.start // self.max_range == slot:
                _hash_zeros(cur.hasher, pos - cur.end)  # bridged gap: the range hash covers it
            else:
                self._close()
                cur = self._cur = _OpenRange(pos, pos)
            cur.hasher.update(view[pos - start : piece_end - start])
            cur.end = piece_end
            pos = piece_end

    def _close(self) -> None:
        if self._cur is not None:
            cur = self._cur
            self._ranges.append({"start": cur.start, "end": cur.end, "sha256": cur.hasher.hexdigest()})
            self._cur = None

    def finish(self) -> dict[str, Any]:
        """Close the last range and return the bmap dict."""
        self._close()
        self._finished = True
        return {
            "version": BMAP_VERSION,
            "block_size": self.block_size,
            "image_size": self.size,
            "sha256": self._total.hexdigest(),
            "ranges": list(self._ranges),
        }


def _hash_zeros(hasher: Any, length: int) -> None:
    while length:
        step = min(length, len(_ZEROS))
        hasher.update(_ZEROS[:step])
        length -= step


def bmap_from_fd(
    fd: int,
    *,
    size: int | None = None,
    merge_gap: int = DEFAULT_MERGE_GAP,
    max_range: int = DEFAULT_MAX_RANGE,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, Any]:
    """Bmap of an open raw image; only allocated extents are read, holes are hashed as zeros."""
    if size is None:
        size = os.fstat(fd).st_size
    builder = BmapBuilder(merge_gap=merge_gap, max_range=max_range)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    pos = 0
    for start, end in align_ranges(data_extents(fd, size), BLOCK_SIZE, size):
        builder.feed_zeros(start - pos)
        pos = start
        while pos < end:
            n = os.preadv(fd, [view[: min(chunk_size, end - pos)]], pos)
            if n <= 0:
                raise OSError(errno.EIO, f"short read at offset {pos} (file shrank?)")
            builder.feed(view[:n])
            pos += n
    builder.feed_zeros(size - pos)
    return builder.finish()


def bmap_from_file(
    path: str | os.PathLike[str],
    *,
    merge_gap: int = DEFAULT_MERGE_GAP,
    max_range: int = DEFAULT_MAX_RANGE,
) -> dict[str, Any]:
    """Bmap of a raw image file (see module doc for how ranges are coarsened)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return bmap_from_fd(fd, merge_gap=merge_gap, max_range=max_range)
    finally:
        os.close(fd)


def data_bytes(bmap: dict[str, Any]) -> int:
    """Bytes covered by the data ranges of a bmap."""
    return sum(r["end"] - r["start"] for r in bmap["ranges"])
