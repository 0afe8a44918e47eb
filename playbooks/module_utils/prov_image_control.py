"""Shared state of one image write: failure types, first-error capture, abort flag, stage timings.

Part of the provisioner_image_write module (playbooks/library); runs on the target host, stdlib only.
Every stage thread (HTTP readers, writers, zeroer, verifiers) reports through one Control, so the
first failure wins and stops all the others.
"""

from __future__ import annotations

import queue
import threading

MiB = 1 << 20
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


def mbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / 1e6 / seconds, 1) if seconds > 0 else 0.0
