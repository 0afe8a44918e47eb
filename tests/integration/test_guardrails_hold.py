"""What the guardrails judged is what the host gets: the request's backup block reaches the backup
phases (and only they see the store's secrets), a waived `backup.enabled=false` installs no backup,
RAID comes from the pool's policy, the policy's default lease applies, and a host that fails
`check_handover` is not handed over.

The stand-in playbooks (tests/playbooks/) copy each phase's extravars file out of its private data
dir when PROVISIONER_TEST_PHASE_INPUTS names a directory, so these tests read what each phase was
really given."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.core.timeutil import parse_iso
from tests.integration.harness import World, base_env, running_app
from tests.integration.test_guardrails_api import ask_waiver, audit, in_days, put

# A host reached over SSH keeps its OS: no image phase (an image is written only on bare metal).
PROVISION = ["wipe", "raid", "firewall", "backup", "restore-verify", "handover"]
SFTP_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWJhY2t1cC1rZXktZm9yLXRlc3Rz\n"
            "-----END OPENSSH PRIVATE KEY-----\n")


@pytest.fixture
def inputs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "phase-inputs"
    d.mkdir()
    return d


@pytest.fixture
def world_with_store(tmp_path: Path, inputs_dir: Path) -> Iterator[World]:
    """SQLite world with a backup store configured (never contacted: the stand-in phases only
    record what they were given)."""
    key = tmp_path / "client_key"
    key.write_text(SFTP_KEY)
    store = tmp_path / "backup.json"
    store.write_text(json.dumps({"host": "backup.invalid", "port": 2222, "user": "bk", "private_key": str(key),
                                 "base_path": "/srv/backups",
                                 # Pinned like every store (never dialled here): without it no backup phase runs.
                                 "known_hosts_line": "[backup.invalid]:2222 ssh-ed25519 "
                                                     "AAAAC3NzaC1lZDI1NTE5AAAAIIenRJx98nOqSZ+zxoHaonDcZiA+JCjMpCQcSXKpQn7S"}))
    env = base_env(tmp_path, PROVISIONER_BACKUP_STORE=str(store), PROVISIONER_TEST_PHASE_INPUTS=str(inputs_dir))
    with running_app(env) as w:
        yield w


def phase_inputs(inputs_dir: Path, job_id: int) -> dict[str, dict[str, Any]]:
    return {p.name.removeprefix(f"{job_id}-").removesuffix(".json"): json.loads(p.read_text())
            for p in inputs_dir.glob(f"{job_id}-*.json")}


def test_backup_block_reaches_only_the_backup_phases(world_with_store: World, inputs_dir: Path) -> None:
    w = world_with_store
    # The stand-in compliance check reports this retention as installed: someone changed the host.
    host = w.enroll("node1", labels={"backup_retention": "7"})
    r = w.request(backup={"paths": ["/srv/app", "/etc"], "retention_days": 21, "schedule": "6h"})
    assert r.status_code == 202, r.text
    job = w.wait_job(r.json()["job_ids"][0], timeout=600)
    assert job["status"] == "succeeded", job
    got = phase_inputs(inputs_dir, job["id"])
    assert set(got) == set(PROVISION)
    for name in ("backup", "restore-verify"):
        bk = got[name]["provisioner_backup"]
        assert bk["paths"] == ["/srv/app", "/etc"] and bk["retention_days"] == 21
        assert bk["schedule"] == "*-*-* 00/6:00:00"
        assert bk["sftp_private_key"] == SFTP_KEY  # bytes as stored: not stripped
        assert bk["repository"].startswith("sftp:bk@backup.invalid:/srv/backups/node1-") and bk["password"]
    password = got["backup"]["provisioner_backup"]["password"]
    for name in set(PROVISION) - {"backup", "restore-verify"}:
        assert "provisioner_backup" not in got[name], name
        text = json.dumps(got[name])
        assert password not in text and "c2VjcmV0LWJhY2t1cC1rZXk" not in text, name
    for name in PROVISION:
        assert got[name]["provisioner_image"] is None, name
    # What the backup phase reported installing is the request's block, and the host was handed over.
    h = w.get("cust_a", f"/v1/hosts/{host['id']}").json()
    assert h["results"]["backup"] == {"paths": ["/srv/app", "/etc"], "retention_days": 21,
                                      "schedule": "*-*-* 00/6:00:00"}
    assert h["state"] == "active" and h["compliance"]["source"] == "handover" and h["compliance"]["compliant"]

    # The compliance check holds the host to the request's block, not to the playbook's defaults.
    check = w.wait_job(w.post("operator", f"/v1/hosts/{host['id']}/compliance-check").json()["id"], timeout=600)
    assert check["status"] == "succeeded", check
    verdict = w.get("cust_a", f"/v1/hosts/{host['id']}").json()["compliance"]
    assert [v["code"] for v in verdict["violations"]] == ["backup.config_drifted"], verdict
    assert "retention is 7 days, the request asked for 21" in verdict["violations"][0]["message"]


def test_waived_backup_is_not_installed_and_the_host_shows_the_waiver(world_with_store: World,
                                                                     inputs_dir: Path) -> None:
    w = world_with_store
    host = w.enroll("node1")
    wid = ask_waiver(w).json()["id"]
    assert w.post("operator", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(7)}).status_code == 200
    r = w.request(backup={"enabled": False})
    assert r.status_code == 202, r.text
    job = w.wait_job(r.json()["job_ids"][0], timeout=600)
    assert job["status"] == "succeeded", job
    phases = {p["name"]: p for p in job["phases"]}
    for name in ("backup", "restore-verify"):
        assert phases[name]["status"] == "skipped"
        assert f"waiver #{wid} of backup.required (tenant:acme" in phases[name]["reason"]
    assert phases["handover"]["status"] == "succeeded"
    # The skipped phases never ran: no playbook got their inputs, and no one got the store's secrets.
    got = phase_inputs(inputs_dir, job["id"])
    assert set(got) == set(PROVISION) - {"backup", "restore-verify"}
    assert not any("provisioner_backup" in v for v in got.values())
    h = w.get("cust_a", f"/v1/hosts/{host['id']}").json()
    assert "backup" not in h["results"] and h["last_restore_passed"] is None
    assert [(x["id"], x["code"], x["scope"]) for x in h["waivers"]] == [(wid, "backup.required", "tenant:acme")]
    assert h["compliance"]["compliant"] is True
    assert [v["code"] for v in h["compliance"]["waived"]] == ["backup.required"]


def test_failed_handover_check_keeps_the_host(world_with_store: World, inputs_dir: Path) -> None:
    w = world_with_store
    host = w.enroll("node1", labels={"raid_result_state": "degraded"})
    job = w.wait_job(w.request().json()["job_ids"][0], timeout=600)
    assert job["status"] == "failed" and job["error_code"] == "guardrails.handover_refused", job
    assert "not handed over" in job["error"] and "degraded" in job["error"]
    handover = job["phases"][-1]
    assert handover["name"] == "handover" and handover["status"] == "failed" and handover["reason"] == job["error"]
    # The handover playbook (the customer's key) never ran.
    assert set(phase_inputs(inputs_dir, job["id"])) == set(PROVISION) - {"handover"}
    h = w.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "failed"
    assert [v["code"] for v in h["compliance"]["violations"]] == ["raid.degraded"]
    refused = audit(w, "host.handover_refused")
    assert len(refused) == 1 and refused[0]["after"]["codes"] == ["raid.degraded"]

    # With a host-scoped waiver of raid.degraded, the same host is handed over (and says why).
    host2 = w.enroll("node2", labels={"raid_result_state": "degraded"})
    wid = w.post("operator", "/v1/waivers", {"code": "raid.degraded", "scope": f"host:{host2['id']}",
                                             "justification": "Replacement disk arrives Monday, data is scratch"}
                 ).json()["id"]
    assert w.post("admin", f"/v1/waivers/{wid}/approve", {"expires_at": in_days(3)}).status_code == 200
    job = w.wait_job(w.request().json()["job_ids"][0], timeout=600)
    assert job["status"] == "succeeded", job
    h2 = w.get("operator", f"/v1/hosts/{host2['id']}").json()
    assert h2["state"] == "active" and [v["code"] for v in h2["compliance"]["waived"]] == ["raid.degraded"]
    assert [x["id"] for x in h2["waivers"]] == [wid]


def test_raid_level_and_lease_come_from_the_policy(world_with_store: World, inputs_dir: Path) -> None:
    w = world_with_store
    w.enroll("node1")
    r = put(w, "admin", "/v1/policy", {"raid_min_level": {"default": "6"}, "default_lease_hours": 5})
    assert r.status_code == 200, r.text
    r = w.request()
    assert r.status_code == 202, r.text
    req = r.json()
    assert req["params"]["raid_level"] == "6"
    expires, accepted = parse_iso(req["lease_expires_at"]), parse_iso(req["accepted_at"])
    assert expires is not None and accepted is not None and (expires - accepted).total_seconds() == 5 * 3600
    job = w.wait_job(req["job_ids"][0], timeout=600)
    assert job["status"] == "succeeded", job
    assert phase_inputs(inputs_dir, job["id"])["raid"]["provisioner_raid_level"] == "6"
    # A request's own lease and RAID level still win over the policy's defaults (RAID 10 survives one
    # failure, so the pool's minimum goes back to RAID 1 for it).
    assert put(w, "admin", "/v1/policy", {"raid_min_level": {}, "default_lease_hours": 5}).status_code == 200
    w.enroll("node2")
    req2 = w.request(lease_hours=2, raid_level="10").json()
    assert req2["params"]["raid_level"] == "10"
    expires, accepted = parse_iso(req2["lease_expires_at"]), parse_iso(req2["accepted_at"])
    assert expires is not None and accepted is not None and (expires - accepted).total_seconds() == 2 * 3600
    assert w.wait_job(req2["job_ids"][0], timeout=600)["status"] == "succeeded"
