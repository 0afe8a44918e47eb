"""The `vagrant` host driver: creates and destroys lab VMs on demand through `vagrant/lab`.

The lab command prints human output on stderr and the VM's JSON record as the last stdout line.
It runs in its own session so a cancel or a timeout stops vagrant and everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DriverOutcome:
    ok: bool
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False


def run_lab(lab_cmd: Path, args: list[str], *, timeout_s: float, should_cancel: Callable[[], bool],
            on_line: Callable[[str], None]) -> DriverOutcome:
    proc = subprocess.Popen([str(lab_cmd), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out_lines: list[str] = []
    err_tail: list[str] = []

    def pump(stream: Any, sink: list[str], keep: int | None) -> None:
        for line in stream:
            line = line.rstrip("\n")
            sink.append(line)
            if keep and len(sink) > keep:
                del sink[0]
            on_line(line)

    threads = [threading.Thread(target=pump, args=(proc.stdout, out_lines, None), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err_tail, 20), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    stopped = None
    while proc.poll() is None:
        if time.monotonic() > deadline:
            stopped = "timeout"
        elif should_cancel():
            stopped = "cancelled"
        if stopped:
            _stop_group(proc)
            break
        time.sleep(0.25)
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    if stopped == "timeout":
        return DriverOutcome(False, f"`lab {' '.join(args)}` timed out after {timeout_s:.0f}s", timed_out=True)
    if stopped:
        return DriverOutcome(False, "cancelled")
    if proc.returncode != 0:
        why = next((ln for ln in reversed(err_tail) if ln.strip()), f"exit code {proc.returncode}")
        return DriverOutcome(False, f"`lab {' '.join(args)}` failed: {why}")
    try:
        record = json.loads(out_lines[-1]) if out_lines else {}
    except json.JSONDecodeError:
        return DriverOutcome(False, f"`lab {' '.join(args)}` printed no JSON record: {out_lines[-1][:200]!r}")
    return DriverOutcome(True, record=record)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
