"""End to end against a lab bare-metal VM behind its Redfish BMC (sushy-emulator over the lab's
libvirtd): enrollment by the BMC through the CLI (the README's commands), facts, power through API and
CLI, a one-time boot from an ISO inserted as virtual media (seen on the VM's serial console), and the
failures: unpinned / other certificate, wrong credentials, unreachable BMC, each at once with the
BMC's own words; the password nowhere in API output, audit log, service log or database file.

Runs inside the lab's network namespace:
    vagrant/lab exec -- .venv/bin/pytest -q -m e2e tests/e2e/test_bmc.py
Uses PROVISIONER_E2E_BM_HOST (default bm1) from $PROVISIONER_LAB_STATE/bmc.json; when it is missing
the test makes it with `vagrant/lab bm-up` and removes it afterwards.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from provisioner.core.bmc_rules import BootDevice
from provisioner.services import bmc
from provisioner.store.config import Settings
from provisioner.store.db import make_engine
from provisioner.store.models import Host
from tests.e2e.service_cli import cli
from tests.integration.procs import Api, Service, admin_token, free_port, operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISIONER_LAB_STATE", "/run/provisioner-lab"))
NAME = os.environ.get("PROVISIONER_E2E_BM_HOST", "bm1")
MARKER = "PROVISIONER-BMC-E2E-ISO-BOOTED"
AT_ONCE_S = 10.0  # "at once": a refused or unreachable BMC answers in seconds, not after a long timeout


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def machine() -> Iterator[dict[str, Any]]:
    index = STATE / "bmc.json"
    recs = json.loads(index.read_text()) if index.exists() else []
    rec = next((r for r in recs if r["name"] == NAME), None)
    made = rec is None
    if made:
        out = subprocess.run([str(ROOT / "vagrant" / "lab"), "bm-up", NAME], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec is not None
    if "running" in virsh("domstate", rec["domain"]):
        virsh("destroy", rec["domain"])
    try:
        yield rec
    finally:
        if made:
            subprocess.run([str(ROOT / "vagrant" / "lab"), "bm-destroy", NAME], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bmc-svc")
    env = {"PROVISIONER_DATA_DIR": str(tmp / "data")}
    service = Service(env, tmp / "service.log")
    try:
        admin = Api(service.url, admin_token(env))
        op = operator(admin, service.url)
        yield {"service": service, "data": tmp / "data", "admin": admin, "op": op, "url": service.url,
               "op_token": op.c.headers["Authorization"].split()[1], "log": tmp / "service.log", "tmp": tmp}
    finally:
        service.stop()
        print(f"\nservice log tail:\n{service.tail(20)}")


def enroll_body(rec: dict[str, Any], name: str, **bmc_over: Any) -> dict[str, Any]:
    body = {"url": rec["bmc_url"], "username": rec["username"], "password": Path(rec["password_file"]).read_text(),
            "cert_pem": Path(rec["cert"]).read_text()}
    return {"name": name, "bmc": {k: v for k, v in (body | bmc_over).items() if v is not None}}


def refused(svc: dict[str, Any], body: dict[str, Any], status: int, code: str) -> tuple[dict[str, Any], float]:
    t = time.monotonic()
    r = svc["op"].c.post("/v1/hosts", json=body)
    took = time.monotonic() - t
    assert r.status_code == status and r.headers["content-type"].startswith("application/problem+json"), r.text
    problem = r.json()
    assert problem["code"] == code, problem
    # nothing was stored
    assert svc["op"].get("/v1/hosts", name=body["name"])["items"] == []
    return problem, took


def domain_macs(domain: str) -> list[str]:
    return sorted(line.split()[4].lower() for line in virsh("domiflist", domain).splitlines()[2:] if line.split())


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} not seen after {timeout}s"
        time.sleep(1)


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny GRUB ISO that prints MARKER on the serial console, served over http on loopback (the
    BMC downloads it from there)."""
    tmp = tmp_path_factory.mktemp("iso")
    (tmp / "root/boot/grub").mkdir(parents=True)
    (tmp / "root/boot/grub/grub.cfg").write_text(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
        f"echo {MARKER}\nsleep 600\n")
    (tmp / "www").mkdir()
    subprocess.run(["grub-mkrescue", "-o", str(tmp / "www/e2e.iso"), str(tmp / "root")], check=True,
                   capture_output=True, timeout=300)
    port = free_port()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp / "www"), **kw)  # noqa: E731
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/e2e.iso"
    finally:
        server.shutdown()
        server.server_close()


def test_bare_metal_host_by_its_bmc(machine: dict[str, Any], svc: dict[str, Any], iso: str) -> None:
    rec, op = machine, svc["op"]
    password = Path(rec["password_file"]).read_text()
    assert password

    # Trust nothing unpinned: no certificate, plain http, another certificate.
    refused(svc, enroll_body(rec, "x1", cert_pem=None), 422, "bmc.cert_required")
    refused(svc, enroll_body(rec, "x2", url=rec["bmc_url"].replace("https:", "http:")), 422, "bmc.url_insecure")
    other = svc["tmp"] / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=not-the-bmc", "-keyout", str(svc["tmp"] / "other.key"),
                    "-out", str(other)], check=True, capture_output=True)
    problem, took = refused(svc, enroll_body(rec, "x3", cert_pem=other.read_text()), 502, "bmc.cert_mismatch")
    assert took < AT_ONCE_S, took
    # Wrong credentials: the BMC's own words, at once.
    problem, took = refused(svc, enroll_body(rec, "x4", password=password + "-wrong"), 502, "bmc.auth_failed")
    assert "Incorrect username or password" in problem["detail"] and took < AT_ONCE_S, (problem, took)
    # Unreachable: nothing listens there; refused in seconds.
    dead = f"https://127.0.0.1:{free_port()}"
    problem, took = refused(svc, enroll_body(rec, "x5", url=dead), 502, "bmc.unreachable")
    assert "Connection refused" in problem["detail"] and took < AT_ONCE_S, (problem, took)

    # Enroll as the README says (CLI): the facts the BMC knows are recorded, the MACs are the domain's.
    host = cli(svc, "hosts", "enroll", NAME, "--bmc-url", rec["bmc_url"], "--bmc-user", rec["username"],
               "--bmc-password-file", rec["password_file"], "--bmc-cert", rec["cert"])
    assert host["driver"] == "redfish" and host["state"] == "enrolled", host
    assert host["bmc_url"] == rec["bmc_url"] and host["bmc_cert_sha256"] == rec["cert_sha256"]
    assert host["bmc_credential"] == "stored"
    hw = host["hardware"]
    assert hw["macs"] == domain_macs(rec["domain"]) and hw["macs"], hw
    assert hw["cpus"] == 1 and hw["memory_mb"] == 1024 and hw["uuid"] == rec["uuid"], hw
    hid = host["id"]

    # Power on (CLI): the BMC says On and the domain runs.
    on = cli(svc, "hosts", "power", str(hid), "on", "--reason", "e2e")
    assert on["power_state"] == "On", on
    assert virsh("domstate", rec["domain"]).strip() == "running"
    assert op.get(f"/v1/hosts/{hid}/power")["power_state"] == "On"
    # Off (API).
    off = op.post(f"/v1/hosts/{hid}/power", {"action": "off"})
    assert off["power_state"] == "Off", off
    assert virsh("domstate", rec["domain"]).strip() == "shut off"
    assert cli(svc, "hosts", "power", str(hid))["power_state"] == "Off"

    # A one-time boot from an ISO inserted as virtual media (the deploy flow's calls).
    settings = Settings(data_dir=svc["data"], database_url=None, secret_key=None, secret_key_file=None)
    engine = make_engine(settings.effective_database_url)
    try:
        with Session(engine) as s:
            row = s.get(Host, hid)
            assert row is not None
            raw_db = Path(settings.data_dir / "provisioner.store.db").read_bytes()
            assert password.encode() not in raw_db and row.bmc_credential_ciphertext
            log = Path(rec["serial_log"])
            start = log.stat().st_size if log.exists() else 0
            assert bmc.boot_from(settings, row, BootDevice.cd, media_url=iso) == "Cd"
            t = time.monotonic()
            assert op.post(f"/v1/hosts/{hid}/power", {"action": "on"})["power_state"] == "On"

            def booted() -> bool:
                return log.exists() and MARKER in log.read_bytes()[start:].decode(errors="replace")
            wait_for(booted, 180, f"{MARKER} on {log}")
            print(f"power-on -> ISO's first line on the serial console: {time.monotonic() - t:.1f} s")
            assert op.post(f"/v1/hosts/{hid}/power", {"action": "off"})["power_state"] == "Off"
            # The libvirt driver keeps the override: set the disk back, eject.
            assert bmc.boot_from(settings, row, BootDevice.hdd) == "Hdd"
            bmc.client(settings, row).eject_media()
    finally:
        engine.dispose()

    # The password is nowhere: API output, audit log, service log.
    shown = httpx.get(f"{svc['url']}/v1/hosts/{hid}", headers=op.c.headers).text
    audit = svc["admin"].get("/v1/audit", limit=200)
    actions = [e["action"] for e in audit["items"]]
    assert "host.enroll" in actions and actions.count("host.power") >= 4, actions
    for where, text in (("host", shown), ("audit", json.dumps(audit)), ("service log", svc["log"].read_text())):
        assert password not in text, f"the BMC password leaked into the {where}"
    assert rec["bmc_url"] in shown
