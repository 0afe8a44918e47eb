"""Getting image bytes into the store: streamed uploads and registered files → checked, hashed,
block-mapped files ready to be renamed into place.

What is stored, by input format:

* ``raw``: written sparse while it streams in (zero blocks are never written), hashed and block-mapped
  in the same pass (``bmap.BmapBuilder``); stored as ``<name>.raw``, served uncompressed (the writer
  then fetches only the data ranges, in parallel);
* ``raw.zst``: kept compressed (``<name>.raw.zst``, served as a zstd stream); its frames are walked
  to catch truncation (zstandard's stream reader silently stops at a cut frame), then it is
  decompressed on the fly to hash it and build the bmap of the raw content, nothing written;
* ``qcow2``: refused when it has a backing file or an external data file (it would make qemu-img read
  files of the service's machine), else converted with ``qemu-img convert`` to a sparse raw file.

Bounds: ``image_max_bytes`` caps the upload and the raw size (a zstd bomb or a huge qcow2 virtual size
stops with 413). Memory is bounded by a few 4 MiB chunks. Every failure removes the temporary files;
nothing is half published.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from provisioner.core.errors import Conflict, Invalid, StorageFull, TooLarge, Unavailable
from provisioner.imaging.bmap import CHUNK_SIZE, BmapBuilder, bmap_from_file
from provisioner.imaging.formats import QCOW2_MAGIC, ZSTD_MAGIC, ImageFormatError, detect_format, qcow2_to_raw

FORMATS = {"raw": "none", "raw.zst": "zstd", "qcow2": "none"}
FORMAT_HINT = "format must be one of raw, raw.zst, qcow2 (the raw content is what lands on the disk)"


@dataclass
class Prepared:
    """A checked image file (in the store's .tmp dir) with the integrity data of its raw content."""

    path: Path
    format_in: str
    compression: str
    size: int
    sha256: str
    bmap: dict[str, Any]
    temps: list[Path] = field(default_factory=list)

    @property
    def suffix(self) -> str:
        return ".raw.zst" if self.compression == "zstd" else ".raw"


def too_large(limit: int, what: str) -> TooLarge:
    return TooLarge("image.too_large", f"{what} exceeds the limit of {limit} bytes",
                   hint="ask an operator to raise PROVISIONER_IMAGE_MAX_BYTES, or publish a smaller image",
                   limit=limit)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def store_full(what: str) -> StorageFull:
    return StorageFull("image.store_full", f"the image store ran out of space while {what}",
                       hint="nothing was kept; free space in the image store (retire and purge unused images, "
                            "or grow the filesystem), then publish again")


@contextmanager
def store_space(what: str) -> Iterator[None]:
    """A full (or over-quota) store is the operator's to fix, not a corrupt upload or a 500."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise store_full(what) from None
        raise


def corrupt(detail: str) -> Invalid:
    return Invalid("image.corrupt", detail,
                   hint="rebuild or re-download the image and publish it again; nothing was kept")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Invalid("image.unknown_format", f"unknown image format {fmt!r}", hint=FORMAT_HINT,
                      formats=list(FORMATS))
    return fmt


def check_magic(fmt: str, head: bytes) -> None:
    """Refuse content that is plainly not what the format parameter says."""
    if not head:
        raise Invalid("image.empty", "the upload is empty", hint="send the image file as the request body")
    if fmt == "raw.zst" and head[:4] != ZSTD_MAGIC:
        raise corrupt("format=raw.zst but the content is not a zstd stream (bad magic)")
    if fmt == "qcow2" and head[:4] != QCOW2_MAGIC:
        raise corrupt("format=qcow2 but the content is not a qcow2 image (bad magic)")
    if fmt == "raw" and head[:4] in (ZSTD_MAGIC, QCOW2_MAGIC):
        real = "raw.zst" if head[:4] == ZSTD_MAGIC else "qcow2"
        raise Invalid("image.format_mismatch", f"format=raw but the content is a {real} file",
                      hint=f"publish it with format={real}")


def new_temp(tmp_dir: Path, suffix: str) -> Path:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tmp_dir / f"upload-{uuid.uuid4().hex}{suffix}.part"


def sweep_stale(tmp_dir: Path, max_age_s: float = 86400) -> int:
    """Remove temp files a crashed process left behind (older than any upload can take)."""
    removed = 0
    cutoff = time.time() - max_age_s
    for p in tmp_dir.glob("upload-*.part") if tmp_dir.is_dir() else ():
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


# --------------------------------------------------------------------------------------------------
# sinks: where uploaded bytes go while they stream in


class PlainSink:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.bmap: dict[str, Any] | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def finish(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RawSink(PlainSink):
    """Sparse write + sha256 + bmap in one pass. Pieces must stay on the block grid (all but the last)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.builder = BmapBuilder()

    def write(self, data: bytes) -> None:
        base = self.builder.size
        view = memoryview(data)
        for start, end in self.builder.feed(data):
            piece = view[start - base:end - base]
            pos = start
            while piece:
                n = os.pwrite(self.fd, piece, pos)
                piece, pos = piece[n:], pos + n

    def finish(self) -> None:
        os.ftruncate(self.fd, self.builder.size)  # trailing holes count towards the size
        self.bmap = self.builder.finish()
        os.fsync(self.fd)


async def receive(stream: AsyncIterator[bytes], path: Path, fmt: str, max_bytes: int) -> tuple[int, dict | None]:
    """Stream the body into ``path``; returns (bytes received, bmap for raw uploads).

    Disk writes and hashing run in worker threads, 4 MiB at a time; memory stays bounded.
    Raises Invalid / TooLarge (empty, bad magic, too large); starlette's ClientDisconnect passes through.
    """
    with store_space("creating the upload's temporary file"):
        sink: PlainSink = RawSink(path) if fmt == "raw" else PlainSink(path)
    try:
        with store_space("receiving the upload"):
            return await _receive_into(sink, stream, fmt, max_bytes)
    finally:
        sink.close()


async def _receive_into(sink: PlainSink, stream: AsyncIterator[bytes], fmt: str,
                        max_bytes: int) -> tuple[int, dict | None]:
    buf = bytearray()
    total = 0
    checked = False
    async for chunk in stream:
        if not chunk:
            continue
        total += len(chunk)
        if total > max_bytes:
            raise too_large(max_bytes, "the upload")
        buf += chunk
        if not checked and len(buf) >= 4:
            check_magic(fmt, bytes(buf[:4]))
            checked = True
        if len(buf) >= CHUNK_SIZE:
            n = len(buf) // CHUNK_SIZE * CHUNK_SIZE
            data = bytes(buf[:n])
            del buf[:n]
            await anyio.to_thread.run_sync(sink.write, data)
    if not checked:
        check_magic(fmt, bytes(buf[:4]))
    await anyio.to_thread.run_sync(sink.write, bytes(buf))
    await anyio.to_thread.run_sync(sink.finish)
    return total, sink.bmap


# --------------------------------------------------------------------------------------------------
# zstd


_ZSTD_FRAME_MAGIC = int.from_bytes(ZSTD_MAGIC, "little")


def check_zstd_frames(path: Path) -> int:
    """Walk the frame structure (headers and block headers, no decompression); returns the frame count.

    Catches a cut-off stream, which zstandard's streaming reader would end silently.
    """
    size = path.stat().st_size
    frames = 0
    pos = 0
    with open(path, "rb") as f:

        def read(at: int, n: int) -> bytes:
            f.seek(at)
            data = f.read(n)
            if len(data) < n:
                raise corrupt(f"zstd stream is truncated at offset {at} ({size} bytes in total)")
            return data

        while pos < size:
            magic = int.from_bytes(read(pos, 4), "little")
            if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame
                pos += 8 + int.from_bytes(read(pos + 4, 4), "little")
                if pos > size:
                    raise corrupt("zstd stream is truncated inside a skippable frame")
                continue
            if magic != _ZSTD_FRAME_MAGIC:
                raise corrupt(f"zstd stream is corrupt: no frame starts at offset {pos}")
            fhd = read(pos + 4, 1)[0]
            if fhd & 0x08:
                raise corrupt(f"zstd frame at offset {pos} has a reserved header bit set")
            fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
            pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
            while True:
                header = int.from_bytes(read(pos, 3), "little")
                last, btype, bsize = header & 1, (header >> 1) & 3, header >> 3
                if btype == 3:
                    raise corrupt(f"zstd block at offset {pos} has the reserved block type")
                pos += 3 + (1 if btype == 1 else bsize)
                if pos > size:
                    raise corrupt(f"zstd stream is truncated inside a block ({size} bytes in total)")
                if last:
                    break
            pos += 4 if checksum else 0
            if pos > size:
                raise corrupt("zstd stream is truncated: the frame checksum is missing")
            frames += 1
    if not frames:
        raise corrupt("the zstd stream holds no data frame")
    return frames


def zst_bmap(path: Path, max_raw: int, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """Bmap (and sha256, size) of the decompressed content, decompressed on the fly, nothing written."""
    import zstandard

    builder = BmapBuilder()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb") as src:
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_size=1 << 20, read_across_frames=True)
        while True:
            got = 0
            try:
                while got < chunk_size:  # fill the chunk: the builder wants block-aligned pieces
                    n = reader.readinto(view[got:])
                    if not n:
                        break
                    got += n
            except zstandard.ZstdError as exc:
                raise corrupt(f"zstd stream is corrupt: {exc}") from None
            if not got:
                break
            if builder.size + got > max_raw:
                raise too_large(max_raw, "the decompressed image")
            builder.feed(view[:got])
            if got < chunk_size:
                break
    return builder.finish()


# --------------------------------------------------------------------------------------------------
# qcow2


def qcow2_checked_info(path: Path, max_raw: int) -> dict[str, Any]:
    exe = shutil.which("qemu-img")
    if exe is None:
        raise Unavailable("image.converter_missing", "qemu-img is not installed on the service machine",
                      hint="install the Debian package qemu-utils, or publish raw / raw.zst")
    proc = subprocess.run([exe, "info", "--output=json", "-f", "qcow2", str(path)],
                          capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise corrupt(f"not a readable qcow2 image: {proc.stderr.strip()[:500]}")
    info = json.loads(proc.stdout)
    data = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise Invalid("image.qcow2_backing_file", "qcow2 images with a backing file are refused",
                      hint="flatten it first: qemu-img convert -O qcow2 in.qcow2 flat.qcow2")
    if data.get("data-file"):
        raise Invalid("image.qcow2_data_file", "qcow2 images with an external data file are refused",
                      hint="convert it to a self-contained image: qemu-img convert -O qcow2 in.qcow2 out.qcow2")
    if data.get("corrupt"):
        raise corrupt("qemu-img reports the qcow2 image as corrupt")
    if int(info.get("virtual-size", 0)) > max_raw:
        raise too_large(max_raw, f"the qcow2 virtual size ({info.get('virtual-size')} bytes)")
    return info


def qcow2_prepare(src: Path, tmp_dir: Path, max_raw: int) -> Prepared:
    qcow2_checked_info(src, max_raw)
    raw = new_temp(tmp_dir, ".raw")
    try:
        qcow2_to_raw(src, raw)
    except ImageFormatError as exc:
        raw.unlink(missing_ok=True)
        # qemu-img reports a full disk only through its message (strerror), not an exit code.
        if any(os.strerror(e) in str(exc) for e in NO_SPACE):
            raise store_full("converting the qcow2 image to raw") from None
        raise corrupt(str(exc)) from None
    except BaseException:
        raw.unlink(missing_ok=True)
        raise
    try:
        bmap = bmap_from_file(raw)
    except BaseException:
        raw.unlink(missing_ok=True)
        raise
    return _prepared(raw, "qcow2", "none", bmap, temps=[raw])


def _prepared(path: Path, fmt: str, compression: str, bmap: dict[str, Any], temps: list[Path]) -> Prepared:
    if not bmap["image_size"]:
        raise Invalid("image.empty", "the image's raw content is empty", hint="publish a non-empty image")
    return Prepared(path, fmt, compression, bmap["image_size"], bmap["sha256"], bmap, temps)


def prepare_upload(fmt: str, path: Path, tmp_dir: Path, raw_bmap: dict | None, max_raw: int) -> Prepared:
    """Turn a received upload into a Prepared image (blocking: run it in a thread)."""
    if fmt == "raw":
        assert raw_bmap is not None
        return _prepared(path, "raw", "none", raw_bmap, [path])
    if fmt == "raw.zst":
        check_zstd_frames(path)
        return _prepared(path, "raw.zst", "zstd", zst_bmap(path, max_raw), [path])
    prepared = qcow2_prepare(path, tmp_dir, max_raw)
    prepared.temps.append(path)
    return prepared


def prepare_existing(path: Path, tmp_dir: Path, max_raw: int) -> Prepared:
    """A file already in the store: raw and zstd files stay where they are, qcow2 is converted."""
    detected = detect_format(path)
    if detected == "zstd":
        check_zstd_frames(path)
        return _prepared(path, "raw.zst", "zstd", zst_bmap(path, max_raw), [])
    if detected == "qcow2":
        return qcow2_prepare(path, tmp_dir, max_raw)
    if path.stat().st_size > max_raw:
        raise too_large(max_raw, "the image")
    return _prepared(path, "raw", "none", bmap_from_file(path), [])


def place(prepared: Prepared, final: Path) -> None:
    """Atomically publish the prepared temp file as ``final`` (never replacing an existing file)."""
    try:
        with store_space("placing the image"):
            os.link(prepared.path, final)
    except FileExistsError:
        raise Conflict("image.store_conflict", f"{final.name} already exists in the image store",
                      hint="another image uses that file name: publish under another name") from None
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
