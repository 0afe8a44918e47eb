"""Where phases' private data dirs live, and removing those of workers that died.

A phase's private data dir holds secrets for as long as the phase runs (the extravars with the
image token and backup password; the SSH key's FIFO). The runner removes it when the phase ends,
but a worker killed mid-phase cannot. So every worker process puts its private dirs under its own
owner dir, ``data_dir/phase-runs/<host>-<pid>-<random>/``, and holds an exclusive ``flock`` on the
owner dir's ``.lock`` for its whole life. The kernel drops that lock when the process dies, however
it dies, so a later sweep (the next worker start, every reconciler pass) can tell a dead owner from
a live one without trusting pids, which are reused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from provisioner.store.config import Settings

log = logging.getLogger("provisioner.private_dirs")

RUNS = "phase-runs"
LOCK = ".lock"
SCRUBBED = "<worker data dir>"
SCRUBBED_TEMP = "<worker temp dir>"
SCRUBBED_KEY = "<ssh key file>"

_mutex = threading.Lock()
_owned: dict[tuple[int, Path], Path] = {}  # (pid, runs root) -> this process's owner dir
_lock_fds: list[int] = []  # kept open (and so locked) until the process exits


def runs_root(settings: Settings) -> Path:
    return settings.data_dir / RUNS


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def owner_dir(settings: Settings) -> Path:
    """This process's owner dir (made and locked on first use); private data dirs go inside it."""
    root = runs_root(settings)
    key = (os.getpid(), root)  # a forked child must not share its parent's dir
    with _mutex:
        if key in _owned:
            return _owned[key]
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        # Made under a dot name and renamed once locked: a sweep never sees it unlocked.
        making, path = root / f".{name}", root / name
        making.mkdir(mode=0o700)
        fd = os.open(making / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not _try_lock(fd):  # a fresh random name: nobody else can hold it
            os.close(fd)
            raise RuntimeError(f"cannot lock {making / LOCK}")
        os.rename(making, path)  # the lock is on the file, not its name: it stays held
        _lock_fds.append(fd)
        _owned[key] = path
        return path


def sweep_stale(settings: Settings) -> list[Path]:
    """Remove owner dirs whose process is gone (their lock is free); returns what was removed."""
    root = runs_root(settings)
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    removed = []
    for path in entries:
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
            continue  # being made (not locked yet); one left half-made holds no secret
        try:
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # not ours
        try:
            if not _try_lock(fd):
                continue  # its owner is alive (possibly this very process)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d private data dir(s) of dead workers", len(removed))
    return removed


# The rest of a path, up to what ends it in ansible's and ssh's messages.
_REST = r"[^\s'\"),;]*"
# A phase's data dir outside data_dir (tempfile's default dir) and ansible's own temp dirs on this machine.
_TEMP = re.compile(r"(?:/[^\s'\"),;/]+)*/(?:prov-job-|ansible-local-)" + _REST)


def scrub(text: str, settings: Settings, key_files: Iterable[str | None] = ()) -> str:
    """``text`` without this machine's private paths: the private dirs, temp dirs and the given
    SSH key files (they name the worker's files, not the problem, and are nobody else's business)."""
    return scrubber(settings, key_files)(text)


def scrubber(settings: Settings, key_files: Iterable[str | None] = ()) -> Callable[[str], str]:
    """`scrub` with the paths resolved once (a phase's event sink scrubs every event)."""
    root = runs_root(settings)
    roots = sorted({str(root), os.path.realpath(root)}, key=len, reverse=True)
    dirs = re.compile("|".join(re.escape(form) + _REST for form in roots))
    keys = sorted({f for path in key_files if path for f in (path, os.path.realpath(path))}, key=len, reverse=True)

    def run(text: str) -> str:
        text = _TEMP.sub(SCRUBBED_TEMP, dirs.sub(SCRUBBED, text))
        for form in keys:
            text = text.replace(form, SCRUBBED_KEY)
        return text

    return run
