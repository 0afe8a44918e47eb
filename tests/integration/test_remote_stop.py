"""A phase cancelled or timed out over SSH stops its work on the host, not only ansible on the
worker: against a real OpenSSH server on loopback (tests/integration/sshd.py). The host's
processes are children of sshd, not of the worker, so stopping the worker's process tree alone
leaves them running (what happens with `remote=None`). The lab version of this test, through the
whole service and sudo, is tests/e2e/test_remote_stop.py."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from provisioner.core.host_keys import known_hosts_line
from tests.integration.harness import TEST_PLAYBOOKS
from tests.integration.sshd import Sshd
from workers.ansible_bridge import PhaseOutcome, run_playbook
from workers.inventory import inventory_for
from workers.remote_stop import Remote, new_tag

pytestmark = pytest.mark.timeout(300)


def sleepers(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["cmdline"] and p.info["cmdline"][:2] == ["sleep", marker] and p.info["status"] != "zombie":
            out.append(p)
    return out


@pytest.fixture
def marker() -> Iterator[str]:
    """A sleep duration no other test uses, so `sleep <marker>` names this test's processes only."""
    value = f"{random.randint(500, 900)}.{random.randint(10, 99)}{random.randint(1, 9)}"  # no trailing zero: `| float`
    yield value
    for p in sleepers(value):  # a failed test leaves nothing behind for the next one
        p.kill()


def run_sleeping_phase(tmp_path: Path, sshd: Sshd, marker: str, *, remote: bool, timeout_s: float,
                       cancel_when: Callable[[], bool]) -> tuple[PhaseOutcome, list[dict[str, Any]], int]:
    """The engine-test wipe phase over ssh as root, sleeping `marker` seconds attached and
    detached; -> (outcome, events, most sleepers seen at once while it ran)."""
    host = {"connection": "ssh", "address": "127.0.0.1", "port": sshd.port, "ssh_user": "root",
            "host_key": sshd.public_host_key}
    events: list[dict[str, Any]] = []
    seen = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal seen
        while not done.wait(0.2):
            seen = max(seen, len(sleepers(marker)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        outcome = run_playbook(
            playbook=TEST_PLAYBOOKS / "wipe.yml",
            inventory=lambda kh: inventory_for(host, None, kh),
            known_hosts=known_hosts_line("127.0.0.1", sshd.port, sshd.public_host_key),
            extravars={"provisioner_job_id": 7, "provisioner_host_name": "sshhost",
                       "prov_host_labels": {"sleep": marker, "sleep_detached": "1"}},
            ssh_key=sshd.private_key(), timeout_s=timeout_s, should_cancel=cancel_when, on_event=events.append,
            work_root=tmp_path,
            remote=Remote(address="127.0.0.1", port=sshd.port, user="root", host_key=sshd.public_host_key,
                          tag=new_tag(7), private_key=sshd.private_key()) if remote else None)
    finally:
        done.set()
        watcher.join()
    return outcome, events, seen


def test_a_cancelled_phase_stops_its_work_on_the_host(tmp_path: Path, sshd: Sshd, marker: str) -> None:
    outcome, events, seen = run_sleeping_phase(tmp_path, sshd, marker, remote=True, timeout_s=240,
                                               cancel_when=lambda: len(sleepers(marker)) >= 2)
    assert seen >= 2, ("the phase never got its work running on the host", outcome)
    assert outcome.status == "canceled", outcome
    assert outcome.remote_stop is not None and outcome.remote_stop.error is None, outcome.remote_stop
    assert outcome.remote_stop.found >= 2 and outcome.remote_stop.left == 0, outcome.remote_stop
    assert not sleepers(marker), "work the cancelled phase started on the host is still running"
    stop = [e for e in events if e["event"] == "remote_stop"]
    assert len(stop) == 1 and "stopped" in stop[0]["stdout"], stop


def test_a_timed_out_phase_stops_its_work_on_the_host(tmp_path: Path, sshd: Sshd, marker: str) -> None:
    t0 = time.monotonic()
    outcome, _, seen = run_sleeping_phase(tmp_path, sshd, marker, remote=True, timeout_s=40,
                                          cancel_when=lambda: False)
    assert seen >= 2, "the phase timed out before its work ran on the host: nothing was tested"
    assert outcome.status == "timeout" and time.monotonic() - t0 < 120, outcome
    assert outcome.remote_stop is not None and outcome.remote_stop.left == 0, outcome.remote_stop
    assert not sleepers(marker), "work the timed-out phase started on the host is still running"


def test_without_the_remote_stop_the_work_goes_on(tmp_path: Path, sshd: Sshd, marker: str) -> None:
    """What the fault looks like: stopping ansible's tree on the worker leaves the host's side running."""
    outcome, _, _ = run_sleeping_phase(tmp_path, sshd, marker, remote=False, timeout_s=240,
                                       cancel_when=lambda: len(sleepers(marker)) >= 2)
    assert outcome.status == "canceled" and outcome.remote_stop is None
    time.sleep(1)
    assert len(sleepers(marker)) >= 1
