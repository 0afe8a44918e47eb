"""Image format adapters for the publish path: zstd and qcow2 in, sparse raw + bmap out.

The store keeps every image as a sparse raw file plus its bmap (see ``bmap.py``); the writer on the
target host then fetches either the raw file (only its data ranges) or a ``.raw.zst`` of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

from provisioner.imaging.bmap import (
    CHUNK_SIZE,
    DEFAULT_MAX_RANGE,
    DEFAULT_MERGE_GAP,
    BmapBuilder,
    bmap_from_file,
)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
QCOW2_MAGIC = b"QFI\xfb"


class ImageFormatError(Exception):
    """The input is not a valid image of the expected format."""


def detect_format(path: str | os.PathLike[str]) -> str:
    """'qcow2', 'zstd' or 'raw', from the file's magic bytes (raw has none)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == QCOW2_MAGIC:
        return "qcow2"
    if head == ZSTD_MAGIC:
        return "zstd"
    return "raw"


def _read_full(reader: Any, view: memoryview) -> int:
    # zstd readers return short reads at frame and input-chunk boundaries; fill the chunk so the
    # bmap builder sees block-aligned pieces.
    got = 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def zst_to_raw_with_bmap(
    src: BinaryIO,
    dst_path: str | os.PathLike[str],
    *,
    merge_gap: int = DEFAULT_MERGE_GAP,
    max_range: int = DEFAULT_MAX_RANGE,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, Any]:
    """Decompress a zstd stream into a sparse raw file and return its bmap, in one pass.

    Zero blocks are not written (the file stays sparse), so the store pays disk only for data.
    Raises ImageFormatError on a corrupt stream; the partial output is removed.
    """
    import zstandard  # lazy: only the publish path needs it

    builder = BmapBuilder(merge_gap=merge_gap, max_range=max_range)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    fd = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_size=1 << 20, read_across_frames=True)
        while True:
            try:
                n = _read_full(reader, view)
            except zstandard.ZstdError as exc:
                raise ImageFormatError(f"corrupt zstd stream: {exc}") from exc
            if not n:
                break
            base = builder.size
            for start, end in builder.feed(view[:n]):
                os.pwrite(fd, view[start - base : end - base], start)
        os.ftruncate(fd, builder.size)  # trailing holes still count towards the image size
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        Path(dst_path).unlink(missing_ok=True)
        raise
    os.close(fd)
    return builder.finish()


def raw_to_zst(
    src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str], *, level: int = 3, threads: int = -1
) -> int:
    """Compress a raw image for serving; returns the compressed size. Holes compress to ~nothing."""
    import zstandard

    size = os.path.getsize(src_path)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with open(src_path, "rb") as ifh, open(dst_path, "wb") as ofh:
        cctx.copy_stream(ifh, ofh, size=size, read_size=CHUNK_SIZE, write_size=CHUNK_SIZE)
    return os.path.getsize(dst_path)


def qcow2_to_raw(
    src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str], *, qemu_img: str = "qemu-img"
) -> None:
    """Thin adapter over ``qemu-img convert``; the output is sparse (qemu-img skips zero runs)."""
    exe = shutil.which(qemu_img)
    if exe is None:
        raise ImageFormatError(f"{qemu_img} not found (Debian package qemu-utils)")
    cmd = [exe, "convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k", str(src_path), str(dst_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        Path(dst_path).unlink(missing_ok=True)
        raise ImageFormatError(f"qemu-img convert failed ({proc.returncode}): {proc.stderr.strip()}")


def import_image(
    src_path: str | os.PathLike[str],
    raw_path: str | os.PathLike[str],
    *,
    merge_gap: int = DEFAULT_MERGE_GAP,
    max_range: int = DEFAULT_MAX_RANGE,
) -> dict[str, Any]:
    """Any supported upload (raw, .raw.zst, qcow2) -> sparse raw file at ``raw_path`` + its bmap."""
    fmt = detect_format(src_path)
    if fmt == "zstd":
        with open(src_path, "rb") as src:
            return zst_to_raw_with_bmap(src, raw_path, merge_gap=merge_gap, max_range=max_range)
    if fmt == "qcow2":
        qcow2_to_raw(src_path, raw_path)
    elif Path(src_path).resolve() != Path(raw_path).resolve():
        _sparse_copy(src_path, raw_path)
    return bmap_from_file(raw_path, merge_gap=merge_gap, max_range=max_range)


def _sparse_copy(src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str]) -> None:
    # cp --sparse=always re-creates holes for zero runs and keeps existing holes, without reading
    # them into Python.
    proc = subprocess.run(
        ["cp", "--sparse=always", str(src_path), str(dst_path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ImageFormatError(f"copy failed: {proc.stderr.strip()}")
