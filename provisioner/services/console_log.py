"""A host's serial console log: where it may be (inside PROVISIONER_CONSOLE_LOG_DIR) and its end, read
on the worker when a deploy ramdisk or deployed OS never answered (boot.timeout).

The tail is shown to whoever reads the job, so only files inside the console server's directory can
be named: checked on the path as given at enrollment, and again on the resolved path when read (a
symlink in the directory cannot lead out of it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.console_text import last_lines
from provisioner.core.errors import Invalid
from provisioner.store.config import Settings

MAX_LINES = 60


@dataclass(frozen=True)
class ConsoleTail:
    path: str
    text: str
    lines: int
    size: int  # the whole log's size in bytes


class ConsoleLogOutside(Invalid):
    def __init__(self, path: str, directory: Path | None) -> None:
        where = f"inside {directory}" if directory else "anywhere: PROVISIONER_CONSOLE_LOG_DIR is not set"
        super().__init__("host.console_log_outside", f"console log {path!r} is not {where}",
                         hint="give the file the console server writes for this host, inside "
                              "PROVISIONER_CONSOLE_LOG_DIR (set it on the API and worker machines)",
                         console_log_dir=str(directory) if directory else None)


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory and path != directory


def check_path(settings: Settings, path: str | None) -> str | None:
    """The path to store for a host (normalised), or ConsoleLogOutside."""
    if path is None:
        return None
    directory = settings.console_log_dir
    normal = os.path.normpath(path)
    if directory is None or not os.path.isabs(normal) or not _inside(normal, os.path.normpath(directory)):
        raise ConsoleLogOutside(path, directory)
    return normal


def read_tail(settings: Settings, path: str) -> ConsoleTail:
    """The log's last lines (ConsoleLogOutside when it resolves outside the directory; OSError when
    it cannot be read)."""
    directory = settings.console_log_dir
    real = os.path.realpath(path)
    if directory is None or not _inside(real, os.path.realpath(directory)):
        raise ConsoleLogOutside(path, directory)
    with open(real, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - settings.console_tail_bytes))
        raw = f.read(settings.console_tail_bytes)
    text, lines = last_lines(raw if size > len(raw) else b"\n" + raw, max_lines=MAX_LINES,
                             max_chars=settings.event_stdout_max)
    return ConsoleTail(path=path, text=text, lines=lines, size=size)
