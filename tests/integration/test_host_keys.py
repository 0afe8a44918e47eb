"""Pinned SSH host keys against a real OpenSSH server (tests/integration/sshd.py): the key read at
enrollment, an expected fingerprint refused when it differs, a changed key stopping the job before
anything is sent, the re-pin, and ssh's own strict check in the ansible bridge."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.core.host_keys import known_hosts_line
from tests.integration.harness import TEST_PLAYBOOKS, World, base_env, running_app
from tests.integration.sshd import Sshd
from workers.ansible_bridge import run_playbook
from workers.inventory import inventory_for


def enroll_body(sshd: Sshd, name: str = "sshhost", **fields: Any) -> dict[str, Any]:
    return {"name": name, "address": "127.0.0.1", "port": sshd.port, "ssh_private_key": sshd.private_key(),
            "pool": "sshd", "connection": "ssh"} | fields


def audit(world: World, action: str) -> list[dict[str, Any]]:
    r = world.get("auditor", "/v1/audit", params={"action": action, "limit": 50})
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_enrollment_reads_and_pins_the_key_ssh_keygen_shows(world: World, sshd: Sshd) -> None:
    r = world.post("operator", "/v1/hosts", enroll_body(sshd, commission=False))
    assert r.status_code == 201, r.text
    host = r.json()
    assert host["host_key_fingerprint"] == sshd.fingerprint()
    assert host["host_key"] == " ".join(sshd.public_host_key.split()[:2])
    assert host["host_key_pinned_at"]
    (entry,) = audit(world, "host.enroll")
    assert entry["after"]["host_key_fingerprint"] == sshd.fingerprint()
    # The expected fingerprint, when it is the host's, is accepted.
    r = world.post("operator", "/v1/hosts", enroll_body(sshd, "again", commission=False,
                                                        host_key_fingerprint=sshd.fingerprint()))
    assert r.status_code == 201, r.text


def test_expected_fingerprint_that_differs_is_refused_and_nothing_is_written(sqlite_world: World,
                                                                             sshd: Sshd) -> None:
    w = sqlite_world
    wrong = "SHA256:" + "A" * 43
    r = w.post("operator", "/v1/hosts", enroll_body(sshd, host_key_fingerprint=wrong))
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["code"] == "host.key_mismatch" and doc["hint"]
    assert doc["expected"] == wrong and doc["presented"] == sshd.fingerprint()
    assert w.get("operator", "/v1/hosts", params={"name": "sshhost"}).json()["total"] == 0
    assert audit(w, "host.enroll") == []
    # A malformed fingerprint and a host that does not answer are refused as clearly.
    r = w.post("operator", "/v1/hosts", enroll_body(sshd, host_key_fingerprint="MD5:12:34"))
    assert r.status_code == 422 and r.json()["code"] == "request.invalid", r.text
    sshd.stop()
    r = w.post("operator", "/v1/hosts", enroll_body(sshd))
    assert r.status_code == 422 and r.json()["code"] == "host.unreachable" and r.json()["hint"], r.text
    assert w.get("operator", "/v1/hosts", params={"name": "sshhost"}).json()["total"] == 0


@pytest.fixture
def ssh_world(tmp_path: Path) -> Iterator[World]:
    """The service with the engine-test playbooks, whose commission also runs a command on the
    target: a one-phase job that really goes over ssh."""
    books = tmp_path / "playbooks"
    shutil.copytree(TEST_PLAYBOOKS, books)
    commission = (books / "commission.yml").read_text()
    (books / "commission.yml").write_text(commission.replace("  tasks:\n", TOUCH_TASK, 1))
    with running_app(base_env(tmp_path, PROVISIONER_PLAYBOOK_DIR=str(books))) as w:
        yield w


TOUCH_TASK = """  tasks:
    - name: touch the host
      ansible.builtin.command: "true"
      changed_when: false
"""


def commission(w: World, host_id: int) -> dict[str, Any]:
    r = w.post("operator", f"/v1/hosts/{host_id}/commission")
    assert r.status_code == 202, r.text
    return w.wait_job(r.json()["id"], timeout=300)


def test_a_changed_key_stops_the_job_takes_the_host_out_and_a_repin_brings_it_back(ssh_world: World,
                                                                                    sshd: Sshd) -> None:
    w = ssh_world
    body = enroll_body(sshd)
    host = w.enroll(body.pop("name"), **body)
    assert host["state"] == "available" and host["connection"] == "ssh", host
    pinned = host["host_key_fingerprint"]
    assert pinned == sshd.fingerprint()
    job = w.get("operator", "/v1/jobs", params={"host_id": host["id"]}).json()["items"][0]
    events = w.get("operator", f"/v1/jobs/{job['id']}/events", params={"limit": 500}).json()["items"]
    assert any(e["event"] == "runner_on_ok" and e["task"] == "touch the host" for e in events), events

    sshd.change_host_key()
    job = commission(w, host["id"])
    assert job["status"] == "failed" and job["error_code"] == "host.key_changed", job
    assert sshd.fingerprint() in job["error"] and pinned in job["error"]
    assert job["phases"] == [], "no phase may start against the changed key"
    h = w.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "failed" and h["host_key_fingerprint"] == pinned
    (changed,) = audit(w, "host.key_changed")
    assert changed["before"]["host_key_fingerprint"] == pinned
    assert changed["after"] == {"presented_fingerprint": sshd.fingerprint(), "job_id": job["id"]}
    assert any((e["after"] or {}).get("state") == "failed" and e["after"].get("job_id") == job["id"]
               for e in audit(w, "host.state"))

    # Re-pinning with a fingerprint the host does not have changes nothing.
    r = w.post("operator", f"/v1/hosts/{host['id']}/repin", {"fingerprint": pinned})
    assert r.status_code == 409 and r.json()["code"] == "host.key_mismatch", r.text
    assert audit(w, "host.repin") == []
    r = w.post("operator", f"/v1/hosts/{host['id']}/repin", {"fingerprint": sshd.fingerprint()})
    assert r.status_code == 200, r.text
    assert r.json()["host_key_fingerprint"] == sshd.fingerprint() and r.json()["state"] == "failed"
    (repin,) = audit(w, "host.repin")
    assert repin["actor_name"] == "operator" and repin["before"]["host_key_fingerprint"] == pinned
    assert repin["after"]["host_key_fingerprint"] == sshd.fingerprint()
    # A commission job over ssh against the new pin brings the host back to the pool.
    job = commission(w, host["id"])
    assert job["status"] == "succeeded", job
    assert w.get("operator", f"/v1/hosts/{host['id']}").json()["state"] == "available"


def test_repin_is_for_operators_and_ssh_hosts(sqlite_world: World) -> None:
    w = sqlite_world
    local = w.enroll("local1")
    r = w.post("operator", f"/v1/hosts/{local['id']}/repin", {})
    assert r.status_code == 409 and r.json()["code"] == "host.not_ssh", r.text
    assert w.post("cust_a", f"/v1/hosts/{local['id']}/repin", {}).status_code in (403, 404)
    r = w.post("operator", f"/v1/hosts/{local['id']}/repin", {"fingerprint": "nope"})
    assert r.status_code == 422 and r.json()["code"] == "request.invalid"


def test_a_retired_host_is_not_repinned_and_keeps_its_pin(world: World, sshd: Sshd) -> None:
    host = world.post("operator", "/v1/hosts", enroll_body(sshd, commission=False)).json()
    r = world.post("operator", f"/v1/hosts/{host['id']}/state", {"state": "retired", "reason": "decommissioned"})
    assert r.status_code == 200, r.text
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    r = world.post("operator", f"/v1/hosts/{host['id']}/repin", {})
    assert r.status_code == 409 and r.json()["code"] == "host.retired" and r.json()["hint"], r.text
    after = world.get("operator", f"/v1/hosts/{host['id']}").json()
    assert after["host_key_fingerprint"] == host["host_key_fingerprint"] != sshd.fingerprint()
    assert audit(world, "host.repin") == []


PLAYBOOK = """- hosts: target
  gather_facts: false
  tasks:
    - name: touch the host
      ansible.builtin.command: "true"
      changed_when: false
"""


def test_ssh_itself_refuses_a_key_other_than_the_pinned_one(tmp_path: Path, sshd: Sshd) -> None:
    """The second line of defence: even past the service's own check, ansible's ssh connects only
    to the key in the phase's known_hosts."""
    playbook = tmp_path / "touch.yml"
    playbook.write_text(PLAYBOOK)
    pinned = sshd.public_host_key
    host = {"connection": "ssh", "address": "127.0.0.1", "port": sshd.port, "ssh_user": "root", "host_key": pinned}

    def run() -> Any:
        return run_playbook(playbook=playbook, inventory=lambda kh: inventory_for(host, None, kh),
                            known_hosts=known_hosts_line("127.0.0.1", sshd.port, pinned), extravars={},
                            ssh_key=sshd.private_key(), timeout_s=120, should_cancel=lambda: False,
                            on_event=lambda ev: None, work_root=tmp_path)

    ok = run()
    assert ok.ok and not ok.host_key_refused, (ok.failures, ok.tail)
    sshd.change_host_key()
    refused = run()
    assert not refused.ok and refused.unreachable and refused.host_key_refused, refused.failures


def test_the_backup_store_is_only_given_to_hosts_with_its_host_key(tmp_path: Path, sshd: Sshd) -> None:
    """The hosts push the restic password and the store's key over sftp: without the store's host
    key they would trust whoever answers first, so no phase gets the store without it."""
    from provisioner.services.phase_inputs import BackupStoreUnpinned, backup_config
    from provisioner.store.config import Settings
    from provisioner.store.models import Host, Job

    store = {"host": "127.0.0.1", "port": sshd.port, "user": "backup", "private_key": str(sshd.client_key),
             "base_path": "/srv/backup"}
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(store))
    settings = Settings(data_dir=tmp_path / "data", backup_store=str(path))
    job, host = Job(kind="provision", host_id=1), Host(name="h", address="10.0.0.1")
    with pytest.raises(BackupStoreUnpinned) as exc:
        backup_config(settings, job, host)
    assert exc.value.code == "backup.host_key_missing" and exc.value.hint
    path.write_text(json.dumps(store | {"known_hosts_line": f"[127.0.0.1]:{sshd.port} {sshd.public_host_key}"}))
    cfg = backup_config(settings, job, host)
    assert cfg is not None and cfg["host_key"] == sshd.public_host_key.strip()


STAND_IN_LAB = """#!/bin/sh
# Stands in for vagrant/lab: instead of creating a VM, `vm-up` hands out the test's sshd.
case "$1" in
  vm-up) echo '{"name": "'"$2"'", "address": "127.0.0.1", "port": %d, "user": "root", "private_key": "%s"}' ;;
  vm-destroy) echo '{"name": "'"$2"'", "destroyed": true}' ;;
  *) exit 2 ;;
esac
"""


def test_a_host_the_vagrant_driver_creates_is_pinned_at_creation(tmp_path: Path, sshd: Sshd) -> None:
    """The key is read right after vm-up, before the first playbook; the VM creation itself is a
    stand-in (a script that hands out the local sshd), the pin and the ssh phases are real."""
    lab = tmp_path / "lab"
    lab.write_text(STAND_IN_LAB % (sshd.port, sshd.client_key))
    lab.chmod(0o755)
    with running_app(base_env(tmp_path, PROVISIONER_LAB_CMD=str(lab))) as w:
        req = w.request(pool="vagrant").json()
        job = w.wait_job(req["job_ids"][0], timeout=900)
        assert job["status"] == "succeeded", job
        assert [p["name"] for p in job["phases"]][:2] == ["vm-create", "commission"]
        host = w.get("operator", f"/v1/hosts/{req['host_ids'][0]}").json()
        assert host["driver"] == "vagrant" and host["host_key_fingerprint"] == sshd.fingerprint(), host
        (pinned,) = audit(w, "host.pin")
        assert pinned["after"]["host_key_fingerprint"] == sshd.fingerprint()
        assert pinned["after"]["job_id"] == job["id"] and pinned["after"]["driver"] == "vagrant"


def test_a_key_file_path_is_not_shown_in_job_errors_or_events(ssh_world: World, sshd: Sshd, tmp_path: Path) -> None:
    """ssh names a key file it cannot read; the job's error and events keep the message, not the path."""
    from workers import private_dirs

    w = ssh_world
    missing = tmp_path / "operator-keys" / "id_missing"
    body = enroll_body(sshd, ssh_key_path=str(missing))
    body.pop("ssh_private_key")
    host = w.enroll(body.pop("name"), **body)
    job = w.get("operator", "/v1/jobs", params={"host_id": host["id"], "kind": "commission"}).json()["items"][0]
    assert job["status"] == "failed" and job["error_code"] == "host_unreachable", job
    events = w.get("operator", f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["items"]
    text = json.dumps(events) + job["error"]
    assert str(missing) not in text, text
    assert private_dirs.SCRUBBED_KEY in text, text
