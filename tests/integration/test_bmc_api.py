"""Hosts enrolled by their Redfish BMC, through the API, against a real sushy-emulator (its fake
driver: no libvirt needed; the libvirt-backed VMs are tests/e2e/test_bmc.py): the certificate pinned,
an unpinned or other one refused, wrong credentials refused with the BMC's words, the facts recorded,
power through the API audited, and the password nowhere it could be read back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from provisioner.core.bmc_rules import cert_fingerprint
from provisioner.services.secret_rotation import ENCRYPTED_COLUMNS
from provisioner.store.db import session_scope
from provisioner.store.models import AuditEntry, Host
from tests.integration.harness import World
from tests.integration.procs import free_port
from tests.integration.sushy_emulator import FAKE_MACS, SushyEmulator, available, make_cert

pytestmark = pytest.mark.skipif(not available(), reason="no sushy-emulator: install the test extra")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[SushyEmulator]:
    emu = SushyEmulator(tmp_path / "sushy")
    yield emu
    emu.stop()


def body(emu: SushyEmulator, name: str = "bm", **over: Any) -> dict[str, Any]:
    bmc = {"url": emu.url, "username": emu.username, "password": emu.password,
           "cert_pem": emu.cert.read_text()} | over
    return {"name": name, "bmc": {k: v for k, v in bmc.items() if v is not None}}


def problem(world: World, payload: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    r = world.post("operator", "/v1/hosts", payload)
    assert r.status_code == status, r.text
    p: dict[str, Any] = r.json()
    assert p["code"] == code, p
    assert world.get("operator", "/v1/hosts", params={"name": payload["name"]}).json()["items"] == []
    return p


def test_enroll_by_bmc_pins_the_cert_and_records_facts(world: World, emulator: SushyEmulator,
                                                       tmp_path: Path) -> None:
    problem(world, body(emulator, cert_pem=None), 422, "bmc.cert_required")
    problem(world, body(emulator, url=emulator.url.replace("https", "http")), 422, "bmc.url_insecure")
    # Another certificate than the one this BMC serves: refused before the password is sent.
    other, _ = make_cert(tmp_path, "other")
    p = problem(world, body(emulator, cert_pem=None, cert_fingerprint=cert_fingerprint(other.read_text())),
                502, "bmc.cert_mismatch")
    assert emulator.url in p["detail"]
    p = problem(world, body(emulator, password=emulator.password.strip()), 502, "bmc.auth_failed")
    assert "Incorrect username or password" in p["detail"], p  # the BMC's own words

    r = world.post("operator", "/v1/hosts", body(emulator, cert_pem=None,
                                                 cert_fingerprint=cert_fingerprint(emulator.cert.read_text())))
    assert r.status_code == 201, r.text
    host = r.json()
    assert host["driver"] == "redfish" and host["bmc_credential"] == "stored" and host["state"] == "enrolled"
    assert host["hardware"]["macs"] == sorted(FAKE_MACS) and host["hardware"]["source"] == "bmc"
    assert world.get("operator", f"/v1/hosts/{host['id']}/power").json()["power_state"] == "Off"
    r = world.post("operator", f"/v1/hosts/{host['id']}/power", {"action": "on", "reason": "test"})
    assert r.status_code == 200 and r.json()["power_state"] in ("On", "Off"), r.text  # the fake applies later
    # customers cannot drive power
    assert world.get("cust_a", f"/v1/hosts/{host['id']}/power").status_code in (403, 404)

    with session_scope() as s:
        row = s.get(Host, host["id"])
        assert row is not None and row.bmc_credential_ciphertext
        assert emulator.password not in row.bmc_credential_ciphertext
        entries = list(s.exec(select(AuditEntry).where(AuditEntry.object_id == str(host["id"]))).all())
        s.expunge_all()
    assert {e.action for e in entries} >= {"host.enroll", "host.power"}
    texts = [json.dumps(host), world.get("operator", f"/v1/hosts/{host['id']}").text,
             json.dumps([[e.before, e.after] for e in entries])]
    assert all(emulator.password not in t and "password" not in t for t in texts)
    assert (Host, "bmc_credential_ciphertext") in ENCRYPTED_COLUMNS


def test_a_retired_host_is_not_powered_and_its_bmc_is_not_asked(world: World, emulator: SushyEmulator) -> None:
    host = world.post("operator", "/v1/hosts", body(emulator)).json()
    r = world.post("operator", f"/v1/hosts/{host['id']}/state", {"state": "retired", "reason": "sold"})
    assert r.status_code == 200, r.text
    r = world.post("operator", f"/v1/hosts/{host['id']}/power", {"action": "on", "reason": "test"})
    assert r.status_code == 409 and r.json()["code"] == "host.retired" and r.json()["hint"], r.text
    time.sleep(1)  # the fake driver applies a power change later: give a wrongly sent one its time
    assert world.get("operator", f"/v1/hosts/{host['id']}/power").json()["power_state"] == "Off"
    r = world.get("auditor", "/v1/audit", params={"action": "host.power"})
    assert r.json()["items"] == []


def test_power_of_a_host_without_bmc_is_a_conflict(world: World) -> None:
    host = world.enroll("plain", commission=False)
    r = world.get("operator", f"/v1/hosts/{host['id']}/power")
    assert r.status_code == 409 and r.json()["code"] == "host.no_bmc", r.text


def test_unreachable_bmc_fails_at_once(world: World, emulator: SushyEmulator) -> None:
    t = time.monotonic()
    p = problem(world, body(emulator, url=f"https://127.0.0.1:{free_port()}"), 502, "bmc.unreachable")
    assert time.monotonic() - t < 10 and "Connection refused" in p["detail"], p


def test_a_bmc_whose_certificate_changed_is_refused_before_the_password_is_sent(
        world: World, emulator: SushyEmulator, tmp_path: Path) -> None:
    r = world.post("operator", "/v1/hosts", body(emulator))
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    # The same address and credentials, another certificate (a replaced BMC, or someone in between).
    emulator.stop()
    impostor = SushyEmulator(tmp_path / "impostor", cert_cn="impostor", port=emulator.port)
    try:
        for call in (lambda: world.get("operator", f"/v1/hosts/{hid}/power"),
                     lambda: world.post("operator", f"/v1/hosts/{hid}/power", {"action": "on"})):
            r = call()
            assert r.status_code == 502 and r.json()["code"] == "bmc.cert_mismatch", r.text
        # The TLS handshake was refused: it saw no HTTP request but its own start-up probe.
        requests = [line for line in impostor.log.read_text().splitlines() if "HTTP/1.1" in line]
        assert len(requests) == 1 and '"GET /redfish/v1/ HTTP/1.1" 200' in requests[0], requests
    finally:
        impostor.stop()
    with session_scope() as s:
        actions = [e.action for e in s.exec(select(AuditEntry).where(AuditEntry.object_id == str(hid))).all()]
    assert "host.power" not in actions
