"""Stopping ansible-playbook for real.

ansible-core's worker processes call setsid(), so killing ansible-playbook's process group (what
ansible-runner does) leaves the workers and their commands running. We walk the process tree
instead: TERM every process group in it, then KILL whatever is left after a grace period.
"""

from __future__ import annotations

import os
import signal
import time

import psutil


def tree_of(marker: str) -> list[psutil.Process]:
    """Our descendants whose command line names `marker` (the job's private data dir), with theirs."""
    roots = []
    for child in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(child.cmdline()):
                roots.append(child)
        except psutil.Error:
            continue
    procs: dict[int, psutil.Process] = {}
    for root in roots:
        procs[root.pid] = root
        try:
            for p in root.children(recursive=True):
                procs[p.pid] = p
        except psutil.Error:
            continue
    return list(procs.values())


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    groups = set()
    for p in procs:
        try:
            groups.add(os.getpgid(p.pid))
        except OSError:
            continue
    own = os.getpgid(0)
    for g in groups - {own}:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    # Poll instead of psutil.wait_procs: that would reap our direct child, which belongs to
    # pexpect inside ansible-runner (it must do the waitpid itself).
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def terminate_tree(marker: str, grace_s: float = 2.0) -> int:
    """Stops every process of the tree; returns how many there were."""
    procs = tree_of(marker)
    if not procs:
        return 0
    _signal_all(procs, signal.SIGTERM)
    alive = _wait_gone(procs, grace_s)
    if alive:
        _signal_all(alive, signal.SIGKILL)
        _wait_gone(alive, grace_s)
    return len(procs)
