"""The write target of the image writer: a block device (or, for tests, a regular file).

Direct and buffered I/O, the ways to make holes read as zeros (punch-hole, BLKZEROOUT, BLKDISCARD,
plain zero writes), fsync (periodic and final), cache drop and read-back, sysfs queue limits.

Part of the provisioner_image_write module (playbooks/library); runs on the target host, stdlib only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
import time

from ansible.module_utils.prov_image_control import Control, MiB, WriterError

BLOCK = 4096
BLKZEROOUT = 0x127F  # _IO(0x12, 127)
BLKDISCARD = 0x1277  # _IO(0x12, 119)
BLKRRPART = 0x125F  # _IO(0x12, 95)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
ZERO_CHUNK = 4 * MiB
ZEROS = bytes(ZERO_CHUNK)


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


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        _libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        _libc.memcmp.restype = ctypes.c_int
    return _libc


def buffer_address(buf: mmap.mmap) -> tuple[int, object]:
    """Address of a writable buffer, and the ctypes object that must stay alive while it is used."""
    anchor = ctypes.c_char.from_buffer(buf)
    return ctypes.addressof(anchor), anchor


def same_bytes(addr_a: int, addr_b: int, length: int) -> bool:
    """memcmp through ctypes: no copies, and the GIL is released while it runs (unlike comparing
    slices, which copies both sides into bytes objects under the GIL)."""
    return libc().memcmp(addr_a, addr_b, length) == 0


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

    def write(self, offset: int, view: memoryview, aligned_buffer: bool) -> bool:
        """Write all of ``view`` at ``offset``; True when it went to the device with O_DIRECT."""
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
        return fd == self.dfd

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
