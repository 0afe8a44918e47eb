"""Runs one phase playbook through the ansible-runner Python API in a private, throw-away data dir.

Cancellation and timeouts go through ansible-runner's cancel callback, which first stops the whole
process tree (workers/process_tree.py: ansible's workers live in their own sessions), so nothing is
orphaned; for a host reached over SSH it then stops the phase's work on the host too
(`workers/remote_stop.py`: every remote command carries the run's tag, killed by it over SSH).
The SSH key reaches ssh-agent through ansible-runner's FIFO and the data dir is removed
when the phase ends; the runner puts it under this worker's owner dir (`workers/private_dirs.py`),
so the dir of a worker killed mid-phase is removed by the next worker start or reconciler pass. The
host's pinned host key is the only line of a known_hosts file in the same data dir, and ssh checks it
strictly.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from workers.process_tree import terminate_tree
from workers.remote_stop import Remote, StopReport

# What OpenSSH prints when the host's key is not the pinned one (ansible reports the host unreachable).
KEY_REFUSED_MARKERS = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")


@dataclass
class PhaseOutcome:
    status: str  # successful | failed | timeout | canceled
    rc: int | None
    result: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unreachable: bool = False
    tail: list[str] = field(default_factory=list)  # last plain output lines, for errors outside tasks
    driver_error: str | None = None
    # Machine-readable failure codes our modules return (`error` in a failed task's result).
    error_codes: list[str] = field(default_factory=list)
    # ssh refused the host's key: it is not the pinned one.
    host_key_refused: bool = False
    # Cancelled or timed out over SSH: what stopping the work on the host found.
    remote_stop: StopReport | None = None
    # False when running the phase again cannot succeed (a BMC's refusal, a boot that never answered).
    retry_can_help: bool = True

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0


def _failure_text(ev: dict[str, Any]) -> str | None:
    data = ev.get("event_data") or {}
    if ev.get("event") not in ("runner_on_failed", "runner_on_unreachable") or data.get("ignore_errors"):
        return None
    res = data.get("res") or {}
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    return f"task '{data.get('task', '?')}' on {data.get('host', '?')}: {str(msg).strip()[:500]}"


def run_playbook(
    *,
    playbook: Path,
    inventory: Callable[[str | None], dict[str, Any]],
    known_hosts: str | None,
    extravars: dict[str, Any],
    ssh_key: str | None,
    timeout_s: float,
    should_cancel: Callable[[], bool],
    on_event: Callable[[dict[str, Any]], None],
    work_root: Path | None = None,
    remote: Remote | None = None,
) -> PhaseOutcome:
    private = Path(tempfile.mkdtemp(prefix="prov-job-", dir=work_root))
    os.chmod(private, 0o700)
    known_hosts_file: str | None = None
    if known_hosts:
        known_hosts_file = str(private / "known_hosts")
        Path(known_hosts_file).write_text(known_hosts)
    outcome = PhaseOutcome(status="failed", rc=None)

    def handler(ev: dict[str, Any]) -> bool:
        if ev.get("event") == "playbook_on_stats":
            data = (ev.get("event_data") or {}).get("artifact_data") or {}
            outcome.result.update(data.get("prov_result") or {})
            if isinstance(data.get("prov_error_code"), str) and data["prov_error_code"]:
                outcome.error_codes.append(data["prov_error_code"][:64])
        if ev.get("event") == "verbose" and ev.get("stdout"):
            outcome.tail = (outcome.tail + [str(ev["stdout"])[:300]])[-3:]
        text = _failure_text(ev)
        if text:
            outcome.failures.append(text)
            code = ((ev.get("event_data") or {}).get("res") or {}).get("error")
            if isinstance(code, str) and code:
                outcome.error_codes.append(code[:64])
            if ev.get("event") == "runner_on_unreachable":
                outcome.unreachable = True
                raw = str(((ev.get("event_data") or {}).get("res") or {}).get("msg") or "")
                if any(m in raw for m in KEY_REFUSED_MARKERS):
                    outcome.host_key_refused = True
        on_event(ev)
        # False: events live in the database; don't also write them into the data dir.
        return False

    deadline = time.monotonic() + timeout_s
    timed_out = stopped = False

    def cancel_callback() -> bool:
        nonlocal timed_out, stopped
        if time.monotonic() > deadline:
            timed_out = True
        if timed_out or should_cancel():
            # Stop the whole tree ourselves before ansible-runner kills only the leader's group.
            terminate_tree(str(private))
            stopped = True
            return True
        return False

    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(playbook),
            inventory=inventory(known_hosts_file),
            # Every play puts it into its remote commands' environment: what remote.stop() kills by.
            extravars={**extravars, "provisioner_run_tag": remote.tag if remote else ""},
            ssh_key=ssh_key,
            event_handler=handler,
            cancel_callback=cancel_callback,
            quiet=True,
            settings={"pexpect_timeout": 0.5, "suppress_output_file": True},
            envvars={
                # ansible-playbook lives beside this interpreter (a venv is not always on PATH).
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_TIMEOUT": "15",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_LIBRARY": str(playbook.parent / "library"),
                "ANSIBLE_ROLES_PATH": str(playbook.parent / "roles"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_DEPRECATION_WARNINGS": "False",
            },
        )
        outcome.status = "timeout" if timed_out else runner.status
        outcome.rc = runner.rc
        if stopped and remote is not None:
            # ansible is gone on this side: nothing can start new work on the host while we stop it.
            outcome.remote_stop = remote.stop()
            on_event({"event": "remote_stop", "stdout": outcome.remote_stop.summary(remote.address),
                      "event_data": {"host": "target", "task": "stop this phase's work on the host"}})
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return outcome
