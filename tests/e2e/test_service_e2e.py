"""End to end through the real service: a customer requests a lab VM through the API, the
embedded service (SQLite + in-process worker) runs the whole pipeline over SSH, and the host is
checked from outside. Then release, and the failure path (SSH cut mid-job).

Runs inside the lab's network namespace (scripts/e2e.sh: `vagrant/lab exec -- pytest -m e2e`).
DESTRUCTIVE for the data disks of PROVISIONER_E2E_SERVICE_HOST (default lab1).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.core.host_keys import fingerprint
from tests.e2e import lab_known_hosts
from tests.e2e.job_log import wait_job
from tests.e2e.service_cli import cli
from tests.integration.procs import Api, Service, admin_token, customer, free_port, operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISIONER_LAB_STATE", "/run/provisioner-lab"))
HOST = os.environ.get("PROVISIONER_E2E_SERVICE_HOST", "lab1")
IMAGE_HOST = os.environ.get("PROVISIONER_E2E_IMAGE_HOST", "lab2")
PREFIX = os.environ.get("PROVISIONER_LAB_PREFIX", "provlab-")
SSH = ["ssh", *lab_known_hosts.OPTS, "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
       "-o", "ConnectTimeout=15"]


def lab_hosts() -> list[dict[str, Any]]:
    path = STATE / "hosts.json"
    if not path.exists():
        pytest.fail(f"{path} missing: run the e2e suite through scripts/e2e.sh (it brings the lab up)")
    return json.loads(path.read_text())


def ssh(rec: dict[str, Any], cmd: str, *, key: str | None = None, user: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    lab_known_hosts.ensure(rec)
    args = [*SSH, "-i", key or rec["private_key"], "-p", str(rec["port"]), f"{user or rec['user']}@{rec['address']}",
            cmd]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("svc")
    gateway = json.loads((STATE / "backup.json").read_text())["host"]  # the controller, as the VMs see it
    port = free_port()
    env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_BACKUP_STORE": str(STATE / "backup.json"),
           "PROVISIONER_RECONCILE_SECONDS": "5", "PROVISIONER_PUBLIC_URL": f"http://{gateway}:{port}"}
    # Inside the lab namespace: 0.0.0.0 reaches only loopback and the VMs' network (image downloads).
    service = Service(env, tmp / "service.log", worker=True, host="0.0.0.0", port=port)
    try:
        admin = Api(service.url, admin_token(env))
        key = tmp / "customer_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-customer", "-f", str(key)],
                       check=True)
        op = operator(admin, service.url)
        yield {"service": service, "data": str(tmp / "data"), "admin": admin, "op": op, "url": service.url,
               "op_token": op.c.headers["Authorization"].split()[1],
               "cust": customer(admin, service.url), "key": str(key), "pub": (tmp / "customer_key.pub").read_text()}
    finally:
        service.stop()
        print(f"\nservice log tail:\n{service.tail(30)}")


def test_customer_gets_a_raided_firewalled_backed_up_host_and_releases_it(svc: dict[str, Any]) -> None:
    rec = next(h for h in lab_hosts() if h["name"] == HOST)
    op, cust, admin = svc["op"], svc["cust"], svc["admin"]
    host = op.post("/v1/hosts", {"name": HOST, "address": rec["address"], "port": rec["port"],
                                 "ssh_user": rec["user"], "ssh_key_path": rec["private_key"]})
    commission = op.get("/v1/jobs", host_id=host["id"], kind="commission")["items"][0]
    job = wait_job(admin, commission["id"], 600)
    assert job["status"] == "succeeded", job
    host = op.get(f"/v1/hosts/{host['id']}")
    assert host["state"] == "available"
    assert host["hardware"]["data_disks"] == ["/dev/vdb", "/dev/vdc"], host["hardware"]

    req = cust.post("/v1/requests", {
        "ssh_public_key": svc["pub"].strip(),
        "firewall_ports": [{"port": 8080, "proto": "tcp", "sources": ["192.168.121.0/24"]}],
        "backup": {"paths": ["/etc", "/srv/data"], "retention_days": 7, "schedule": "daily"},
    })
    job = wait_job(admin, req["job_ids"][0], 1500)
    assert job["status"] == "succeeded", job
    # a host reached over SSH keeps its OS: no image phase
    assert [p["name"] for p in job["phases"]] == ["wipe", "raid", "firewall", "backup", "restore-verify", "handover"]
    assert job["sli"]["total_s"] > 0 and job["sli"]["slo_met"] is True

    # From outside: the array, the firewall, the restore record, the customer's key.
    mdstat = ssh(rec, "cat /proc/mdstat").stdout
    assert "md0 : active raid1" in mdstat and "[UU]" in mdstat, mdstat
    ruleset = json.loads(ssh(rec, "sudo nft -j list ruleset").stdout)
    chains = [x["chain"] for x in ruleset["nftables"] if "chain" in x]
    inp = next(c for c in chains if c.get("hook") == "input")
    assert inp["policy"] == "drop"
    rules = ssh(rec, "sudo nft list chain inet filter input").stdout
    assert "8080" in rules
    restore = json.loads(ssh(rec, "sudo cat /var/lib/provisioner/restore-test.json").stdout)
    assert restore["passed"] is True
    h = cust.get(f"/v1/hosts/{host['id']}")
    assert h["state"] == "active" and h["last_restore_passed"] is True and h["last_restore_at"]
    assert h["results"]["restore_verify"]["checksum"] == restore["checksum"]
    who = ssh(rec, "id -un", key=svc["key"], user="customer")
    assert who.stdout.strip() == "customer"
    # The job's events carry no secrets.
    events = json.dumps(admin.get(f"/v1/jobs/{job['id']}/events", limit=1000))
    assert "PRIVATE KEY" not in events

    # Continuous compliance: a check on the healthy host passes...
    check = wait_job(admin, op.post(f"/v1/hosts/{host['id']}/compliance-check")["id"], 900)
    assert check["status"] == "succeeded", check
    assert op.get(f"/v1/hosts/{host['id']}")["compliance"]["compliant"] is True
    # ...then break every guardrail on the active host: the next check names each one.
    ssh(rec, "sudo mdadm /dev/md0 --fail /dev/vdc")
    ssh(rec, "sudo nft flush ruleset")
    repo = h["results"]["backup"]["repository"].split(":", 2)[-1]
    # The store is on the controller side of the lab: damage the repository there. The largest pack
    # (file data) goes, the others get overwritten mid-file (deleting tree packs makes restic retry
    # each read for about a minute).
    packs = sorted((p for p in Path(repo, "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    assert packs, f"no packs in {repo}"
    packs.pop().unlink()
    for pack in packs:
        with pack.open("r+b") as fh:
            fh.seek(min(200, pack.stat().st_size // 2))
            fh.write(b"\0CORRUPTED BY THE E2E TEST\0" * 2)
    check = wait_job(admin, op.post(f"/v1/hosts/{host['id']}/compliance-check")["id"], 900)
    assert check["status"] == "succeeded", check
    verdict = cust.get(f"/v1/hosts/{host['id']}")["compliance"]
    found = {v["code"] for v in verdict["violations"]}
    print("compliance after breaking the host:", json.dumps(verdict["violations"])[:2000])
    assert verdict["compliant"] is False
    assert {"raid.degraded", "firewall.default_deny_required", "restore.failed"} <= found, found
    summary = cust.get("/v1/compliance")
    assert summary["fleet"]["noncompliant"] == 1 and summary["noncompliant"][0]["host_id"] == host["id"]

    rel = cust.post(f"/v1/requests/{req['id']}/release")
    rjob = wait_job(admin, max(rel["job_ids"]), 900)
    assert rjob["status"] == "succeeded", rjob
    assert op.get(f"/v1/hosts/{host['id']}")["state"] == "available"
    assert "md0" not in ssh(rec, "cat /proc/mdstat").stdout
    for disk in ("/dev/vdb", "/dev/vdc"):
        assert ssh(rec, f"sudo mdadm --examine {disk}", check=False).returncode != 0, f"{disk} still has an array"
    assert ssh(rec, "id -un", key=svc["key"], user="customer", check=False).returncode != 0


def _set_link(domain: str, state: str) -> None:
    out = subprocess.run(["virsh", "domiflist", domain], capture_output=True, text=True, check=True).stdout
    macs = [ln.split()[-1] for ln in out.splitlines()[2:] if ln.strip()]
    for mac in macs:
        subprocess.run(["virsh", "domif-setlink", domain, mac, state], capture_output=True, check=True)


def test_ssh_cut_mid_job_fails_clearly_and_the_host_can_be_cleaned(svc: dict[str, Any]) -> None:
    rec = next(h for h in lab_hosts() if h["name"] == HOST)
    op, cust, admin = svc["op"], svc["cust"], svc["admin"]
    host = op.get("/v1/hosts", name=HOST)["items"][0]
    assert host["state"] == "available", host
    req = cust.post("/v1/requests", {"ssh_public_key": svc["pub"].strip()})
    job_id = req["job_ids"][0]
    admin.wait_job(job_id, lambda j: j["current_phase"] == "raid", timeout=600)
    domain = f"{PREFIX}{HOST}"
    _set_link(domain, "down")
    try:
        t0 = time.monotonic()
        job = wait_job(admin, job_id, 600)
        took = time.monotonic() - t0
    finally:
        _set_link(domain, "up")
    assert job["status"] == "failed", job
    assert "unreachable" in job["error"].lower() or "timed out" in job["error"].lower(), job["error"]
    print(f"failed {took:.0f}s after the link went down: {job['error']}")
    assert op.get(f"/v1/hosts/{host['id']}")["state"] == "failed"
    assert cust.get(f"/v1/requests/{req['id']}")["status"] == "failed"
    # Back on the network, the customer releases the failed request: the host is wiped and returns.
    deadline = time.monotonic() + 120
    while ssh(rec, "true", check=False).returncode != 0:
        assert time.monotonic() < deadline, "VM did not come back on the network"
        time.sleep(3)
    rel = cust.post(f"/v1/requests/{req['id']}/release")
    rjob = wait_job(admin, max(rel["job_ids"]), 900)
    assert rjob["status"] == "succeeded", rjob
    assert op.get(f"/v1/hosts/{host['id']}")["state"] == "available"


def test_vagrant_driver_creates_provisions_and_destroys_a_vm(svc: dict[str, Any]) -> None:
    """A CI user asks for a throw-away VM: the service creates it (its own SLI phase), commissions
    and provisions it; releasing it destroys the VM."""
    cust, admin = svc["cust"], svc["admin"]
    req = cust.post("/v1/requests", {"pool": "vagrant", "ssh_public_key": svc["pub"].strip()})
    job = wait_job(admin, req["job_ids"][0], 1800)
    assert job["status"] == "succeeded", job
    names = [p["name"] for p in job["phases"]]
    assert names[:2] == ["vm-create", "commission"] and names[-1] == "handover"
    assert job["sli"]["phases_s"]["vm-create"] > 0
    host = admin.get(f"/v1/hosts/{req['host_ids'][0]}")
    assert host["driver"] == "vagrant" and host["state"] == "active" and host["address"].startswith("192.168.")
    # Pinned by the service when it created the VM: the test's own ssh trusts that pin.
    assert host["host_key_fingerprint"] and host["host_key_pinned_at"], host
    rec = {"address": host["address"], "port": host["port"], "user": "customer", "private_key": svc["key"],
           "host_key": host["host_key"]}
    lab_known_hosts.pin(rec["address"], rec["port"], host["host_key"])
    assert ssh(rec, "cat /proc/mdstat").stdout.count("[UU]") == 1
    domain = f"{PREFIX}{host['name']}"
    assert subprocess.run(["virsh", "dominfo", domain], capture_output=True).returncode == 0
    rel = cust.post(f"/v1/requests/{req['id']}/release")
    rjob = wait_job(admin, max(rel["job_ids"]), 600)
    assert rjob["status"] == "succeeded", rjob
    assert [p["name"] for p in rjob["phases"]] == ["vm-destroy"]
    assert admin.get(f"/v1/hosts/{host['id']}")["state"] == "retired"
    assert subprocess.run(["virsh", "dominfo", domain], capture_output=True).returncode != 0, "VM still defined"


# The first 4 MiB of each data disk and the block devices: what an image write would change.
DISKS_DIGEST = ("lsblk -dno NAME,SIZE,TYPE; for d in /dev/vdb /dev/vdc; do sudo head -c 4194304 $d | sha256sum; "
                "done")


def test_an_image_is_never_written_under_a_running_os(svc: dict[str, Any], tmp_path: Path) -> None:
    """A lab VM enrolled over SSH keeps its own OS: an image is written only by the deploy ramdisk,
    which only a BMC can boot (tests/e2e/test_bare_metal_deploy.py). Its canary and an image request
    in its pool are refused with image.needs_bmc; nothing runs on it, its disks are as they were, and
    it stays available. (That a request without an image gets such a host provisioned with the OS it
    has, and no image phase, is the customer test's.)"""
    rec = next(h for h in lab_hosts() if h["name"] == IMAGE_HOST)
    op, admin = svc["op"], svc["admin"]
    tenant = admin.get("/v1/tenants")["items"][0]["id"]
    u = admin.post("/v1/users", {"name": "imgteam", "role": "imager", "tenant_id": tenant})
    imager = Api(svc["service"].url, admin.post(f"/v1/users/{u['id']}/tokens", {"name": "t"})["token"])
    raw = tmp_path / "sample.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(raw), "16M"], check=True)
    r = imager.c.post("/v1/images", params={"name": "ssh-only-e2e", "version": "1", "os_name": "debian",
                                            "os_version": "12", "format": "raw"},
                      content=raw.read_bytes(), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    img = r.json()
    host = op.post("/v1/hosts", {"name": IMAGE_HOST, "address": rec["address"], "port": rec["port"],
                                 "ssh_user": rec["user"], "ssh_key_path": rec["private_key"], "pool": "lab"})
    cjob = op.get("/v1/jobs", host_id=host["id"], kind="commission")["items"][0]
    assert wait_job(admin, cjob["id"], 600)["status"] == "succeeded"
    disks_before = ssh(rec, DISKS_DIGEST).stdout
    r = imager.c.post(f"/v1/images/{img['id']}/canary", json={"pool": "lab"})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "image.needs_bmc" and body["ssh_hosts"] >= 1 and "--bmc-url" in body["hint"], body
    r = imager.c.post("/v1/requests", json={"image": "ssh-only-e2e", "pool": "lab",
                                            "ssh_public_key": svc["pub"].strip()})
    assert r.status_code == 409 and r.json()["code"] == "image.needs_bmc", r.text
    assert admin.get(f"/v1/hosts/{host['id']}")["state"] == "available"
    jobs = admin.get("/v1/jobs", host_id=host["id"])["items"]
    assert [j["kind"] for j in jobs] == ["commission"], jobs
    assert ssh(rec, DISKS_DIGEST).stdout == disks_before
    assert admin.get(f"/v1/hosts/{host['id']}")["state"] == "available"


def _wait_sshd(rec: dict[str, Any]) -> None:
    """sshd re-executes itself on reload: wait until it answers again."""
    deadline = time.monotonic() + 60
    while "ssh-" not in subprocess.run(["ssh-keyscan", "-T", "5", "-p", str(rec["port"]), rec["address"]],
                                       capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "sshd did not come back after the reload"
        time.sleep(1)


def test_enrolled_by_key_file_pinned_and_a_changed_host_key_is_refused(svc: dict[str, Any]) -> None:
    """`hosts enroll --key-file --fingerprint` as the README shows; the VM's host keys are then
    regenerated (a reinstall, or another machine at its address): the next job fails with
    host.key_changed before it sends anything, the host leaves the pool, the refusal is audited;
    after `hosts repin` with the new fingerprint a job passes. The VM's own keys are put back."""
    rec = next(h for h in lab_hosts() if h["name"] == HOST)
    admin = svc["admin"]
    original = lab_known_hosts.ensure(rec)
    expected = fingerprint(original)
    name = f"{HOST}-pinned"
    host = cli(svc, "hosts", "enroll", name, rec["address"], "--port", str(rec["port"]), "--user", rec["user"],
               "--key-file", rec["private_key"], "--fingerprint", expected, "--pool", "hostkeys")
    assert host["credential"] == "stored" and host["host_key_fingerprint"] == expected, host
    commission = svc["op"].get("/v1/jobs", host_id=host["id"], kind="commission")["items"][0]
    assert wait_job(admin, commission["id"], 600)["status"] == "succeeded"
    # A wrong expectation is refused before anything is stored.
    refused = cli(svc, "hosts", "enroll", f"{name}2", rec["address"], "--port", str(rec["port"]), "--user",
                  rec["user"], "--key-file", rec["private_key"], "--fingerprint", "SHA256:" + "A" * 43, ok=False)
    assert refused.returncode == 1 and json.loads(refused.stderr)["code"] == "host.key_mismatch", refused.stderr

    backup = "/root/provisioner-e2e-hostkeys"
    ssh(rec, f"sudo sh -ec 'rm -rf {backup}; mkdir -m 700 {backup}; cp -a /etc/ssh/ssh_host_* {backup}/'")
    try:
        regen = ssh(rec, "sudo sh -ec 'rm /etc/ssh/ssh_host_*; ssh-keygen -q -A >/dev/null; systemctl reload ssh; "
                         "cat /etc/ssh/ssh_host_ed25519_key.pub'")
        new_key = regen.stdout.strip().splitlines()[-1]
        new_fp = fingerprint(new_key)
        assert new_fp != expected
        lab_known_hosts.pin(rec["address"], rec["port"], new_key)  # learned over the verified connection
        _wait_sshd(rec)
        job = wait_job(admin, svc["op"].post(f"/v1/hosts/{host['id']}/commission")["id"], 600)
        assert job["status"] == "failed" and job["error_code"] == "host.key_changed", job
        assert job["phases"] == [] and new_fp in job["error"], job
        h = svc["op"].get(f"/v1/hosts/{host['id']}")
        assert h["state"] == "failed" and h["host_key_fingerprint"] == expected, h
        entries = admin.get("/v1/audit", action="host.key_changed")["items"]
        assert any(e["object_id"] == str(host["id"]) and e["after"]["presented_fingerprint"] == new_fp
                   and e["after"]["job_id"] == job["id"] for e in entries), entries

        repinned = cli(svc, "hosts", "repin", str(host["id"]), "--fingerprint", new_fp)
        assert repinned["host_key_fingerprint"] == new_fp
        assert any(e["object_id"] == str(host["id"]) for e in admin.get("/v1/audit", action="host.repin")["items"])
        job = wait_job(admin, svc["op"].post(f"/v1/hosts/{host['id']}/commission")["id"], 600)
        assert job["status"] == "succeeded", job
        assert svc["op"].get(f"/v1/hosts/{host['id']}")["state"] == "available"
    finally:
        # lab1 keeps the host keys it was created with (the lab and the other tests know those).
        # Whatever key the VM holds now (a regeneration may have stopped halfway) is read on the lab's
        # isolated network, only to put the original keys back.
        lab_known_hosts.pin(rec["address"], rec["port"], lab_known_hosts.scan(rec["address"], rec["port"]))
        ssh(rec, f"sudo sh -ec 'rm /etc/ssh/ssh_host_*; cp -a {backup}/ssh_host_* /etc/ssh/; rm -rf {backup}; "
                 "systemctl reload ssh'")
        _wait_sshd(rec)
        lab_known_hosts.pin(rec["address"], rec["port"], original)
    assert ssh(rec, "true", check=False).returncode == 0, "the VM's original host keys were not restored"
    # The record goes back to the original key too, so the service stays consistent with the VM.
    repinned = cli(svc, "hosts", "repin", str(host["id"]), "--fingerprint", expected)
    assert repinned["host_key_fingerprint"] == expected
