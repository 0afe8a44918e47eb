"""A bare-metal deploy's failures, against a real BMC emulator (sushy-tools' fake driver: real https,
real basic auth, real virtual media that downloads the job's boot ISO from the worker) with no VM
behind it: an unreachable BMC and refused credentials fail the deploy's first phase at once with the
BMC's own words; a ramdisk that never answers fails with boot.timeout after the phase timeout. In each
case the host is not handed over, and the job's keys are gone once it settled.
(The deploy that works, on a lab VM, is tests/e2e/test_bare_metal_deploy.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.store import secrets
from provisioner.store.config import get_settings
from provisioner.store.db import session_scope
from provisioner.store.models import Host, Job
from tests.integration.harness import World, base_env, running_app
from tests.integration.sushy_emulator import SushyEmulator, available

pytestmark = pytest.mark.skipif(not available(), reason="no sushy-emulator: install the test extra")

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
UNROUTABLE = "192.0.2.10"  # TEST-NET-1: no ramdisk will ever answer there


def tiny_ramdisk_iso(where: Path) -> Path:
    """An isolinux ISO shaped like images/build-ramdisk.sh's (it boots nothing useful)."""
    root = where / "iso"
    (root / "isolinux").mkdir(parents=True)
    shutil.copy(ISOLINUX, root / "isolinux")
    shutil.copy(LDLINUX, root / "isolinux")
    (root / "isolinux" / "isolinux.cfg").write_text("DEFAULT deploy\nLABEL deploy\n  KERNEL /vmlinuz\n")
    (root / "vmlinuz").write_bytes(b"\0" * 4096)
    out = where / "deploy-ramdisk.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-V", "PROVDEPLOY", "-J", "-R",
                    "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                    "-boot-info-table", str(root)], check=True, capture_output=True)
    return out


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[SushyEmulator]:
    emu = SushyEmulator(tmp_path / "sushy")
    yield emu
    emu.stop()


# What a VM's serial log holds when the ramdisk booted but its network never came up (from a lab VM's,
# with the terminal's escapes and carriage returns a console server keeps).
CONSOLE = (b"\x1bc\x1b[2JSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from DVD/CD...\r\n"
           + b"".join(b"[   %2d.000000] systemd[1]: early boot line %d\r\n" % (i, i) for i in range(80))
           + b"[   41.120315] systemd-networkd-wait-online[212]: Timeout occurred while waiting for network "
           b"connectivity.\r\n\x1b[0;1;31mFAILED\x1b[0m to start systemd-networkd-wait-online.service\r\n")


@pytest.fixture
def metal(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "consoles").mkdir()
    env = base_env(tmp_path, PROVISIONER_RAMDISK_ISO=str(tiny_ramdisk_iso(tmp_path)),
                   PROVISIONER_PHASE_TIMEOUTS=json.dumps({"ramdisk-wait": 20}),
                   PROVISIONER_CONSOLE_LOG_DIR=str(tmp_path / "consoles"))
    with running_app(env) as w:
        yield w


def image(w: World, tmp_path: Path) -> str:
    """A small candidate image in the catalogue (its bytes never leave: the deploy fails before)."""
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(b"\x5a" * 65536)
    r = w.client.post("/v1/images", params={"name": "tiny-disk", "format": "raw", "version": "1", "os_name": "debian",
                                            "os_version": "12"}, content=raw.read_bytes(), headers=w.h("imager"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def bare_metal_host(w: World, emu: SushyEmulator, *, address: str = UNROUTABLE,
                    **fields: Any) -> dict[str, Any]:
    r = w.post("operator", "/v1/hosts", {"name": "bm", "address": address, "pool": "lab", "commission": True,
                                         "bmc": {"url": emu.url, "username": emu.username, "password": emu.password,
                                                 "cert_pem": emu.cert.read_text()}} | fields)
    assert r.status_code == 201, r.text
    host: dict[str, Any] = r.json()
    job = w.get("operator", "/v1/jobs", params={"host_id": host["id"], "kind": "commission"}).json()["items"][0]
    done = w.wait_job(job["id"], timeout=60)
    assert done["status"] == "succeeded" and [p["name"] for p in done["phases"]] == ["bmc-check"], done
    assert w.get("operator", f"/v1/hosts/{host['id']}").json()["state"] == "available"
    return host


def canary_job(w: World, image_id: str) -> dict[str, Any]:
    r = w.post("imager", f"/v1/images/{image_id}/canary", {"pool": "lab"})
    assert r.status_code == 202, r.text
    job: dict[str, Any] = w.wait_job(r.json()["job_id"], timeout=120)
    return job


def settled_without_keys(job_id: int) -> None:
    with session_scope() as s:
        row = s.get(Job, job_id)
        assert row is not None and row.status == "failed" and row.deploy_secret_ciphertext is None


def test_unreachable_bmc_fails_the_deploy_at_once(metal: World, emulator: SushyEmulator, tmp_path: Path) -> None:
    host = bare_metal_host(metal, emulator)
    img = image(metal, tmp_path)
    emulator.stop()
    t = time.monotonic()
    job = canary_job(metal, img)
    assert job["status"] == "failed" and job["error_code"] == "bmc.unreachable", job
    assert "Connection refused" in job["error"] and job["phases"][0]["name"] == "ramdisk-boot", job
    ramdisk_boot = job["phases"][0]
    assert ramdisk_boot["status"] == "failed" and ramdisk_boot["duration_s"] < 15, ramdisk_boot
    assert time.monotonic() - t < 60
    assert metal.get("operator", f"/v1/hosts/{host['id']}").json()["state"] == "failed"
    settled_without_keys(job["id"])


def test_refused_credentials_fail_the_deploy_with_the_bmcs_words(metal: World, emulator: SushyEmulator,
                                                                 tmp_path: Path) -> None:
    host = bare_metal_host(metal, emulator)
    img = image(metal, tmp_path)
    # The BMC's password was changed behind the service's back.
    with session_scope() as s:
        row = s.get(Host, host["id"])
        assert row is not None
        row.bmc_credential_ciphertext = secrets.encrypt(get_settings(), json.dumps(
            {"username": emulator.username, "password": "not the password"}))
        s.add(row)
        s.commit()
    job = canary_job(metal, img)
    assert job["status"] == "failed" and job["error_code"] == "bmc.auth_failed", job
    assert "Incorrect username or password" in job["error"], job
    assert "not the password" not in json.dumps(job)
    # Refused credentials stay refused: the phase is not run a second time.
    assert job["phases"][0]["name"] == "ramdisk-boot" and job["phases"][0]["attempts"] == 1, job["phases"]
    assert metal.get("operator", f"/v1/hosts/{host['id']}").json()["state"] == "failed"


def test_a_ramdisk_that_never_answers_is_a_boot_timeout(metal: World, emulator: SushyEmulator,
                                                        tmp_path: Path) -> None:
    console = tmp_path / "consoles" / "bm-serial.log"
    console.write_bytes(CONSOLE)
    host = bare_metal_host(metal, emulator, console_log=str(console))
    assert host["console_log"] == str(console)
    img = image(metal, tmp_path)
    job = canary_job(metal, img)
    assert job["status"] == "failed" and job["error_code"] == "boot.timeout", job
    names = [p["name"] for p in job["phases"]]
    assert names == ["ramdisk-boot", "ramdisk-wait"], names
    wait = job["phases"][1]
    # One wait of the phase timeout: the boot ISO is no longer served after it, so a second wait on
    # the same boot could only time out again (the job may retry twice: PROVISIONER_MAX_ATTEMPTS).
    assert get_settings().max_attempts == 2
    assert wait["attempts"] == 1 and 20 <= wait["duration_s"] < 40, wait
    assert UNROUTABLE in job["error"], job
    # The BMC was asked for the job's ISO (downloaded from this worker) and a boot from it.
    events = metal.get("admin", f"/v1/jobs/{job['id']}/events", params={"limit": 200}).json()["items"]
    assert any("serving the job's boot ISO" in (e.get("stdout") or "") for e in events), events
    # The end of the host's serial console is attached to the job, as text, and the error points at it.
    assert f"the last 60 line(s) of its serial console ({console})" in job["error"], job["error"]
    shown = [e for e in events if e["event"] == "console"]
    assert len(shown) == 1 and shown[0]["phase"] == "ramdisk-wait", shown
    last = shown[0]
    assert last["task"] == f"serial console: last 60 line(s) of {console}", last
    lines = last["stdout"].split("\n")
    assert len(lines) == 60 and lines[-1] == "FAILED to start systemd-networkd-wait-online.service", lines[-3:]
    assert "Timeout occurred while waiting for network" in lines[-2] and "SeaBIOS" not in last["stdout"]
    assert "\x1b" not in last["stdout"] and "\r" not in last["stdout"]
    h = metal.get("operator", f"/v1/hosts/{host['id']}").json()
    assert h["state"] == "failed" and h["host_key"] is None, h
    settled_without_keys(job["id"])
    # The BMC downloaded the job's ISO (the ramdisk's private host key is on it); the job's end took
    # it out of the virtual CD, and the BMC deleted its copy.
    # (It keeps the directory it made for the download: that it is there shows the download happened.)
    assert [d for d in emulator.dir.glob("tmp*") if d.is_dir()], "the BMC never downloaded the job's ISO"
    assert emulator.held_media() == [], emulator.held_media()



def test_a_console_log_must_be_inside_the_console_servers_directory(metal: World, emulator: SushyEmulator,
                                                                   tmp_path: Path) -> None:
    """The console's end is shown to the job's readers: no other file of the worker can be named, at
    enrollment (nothing stored) nor through a symlink placed later (the job says it was not read)."""
    for path in ("/etc/shadow", str(tmp_path / "consoles" / ".." / "secret.log"), str(tmp_path / "consoles")):
        r = metal.post("operator", "/v1/hosts", {"name": "bm-out", "address": UNROUTABLE, "console_log": path,
                                                  "bmc": {"url": emulator.url, "username": emulator.username,
                                                          "password": emulator.password,
                                                          "cert_pem": emulator.cert.read_text()}})
        assert r.status_code == 422 and r.json()["code"] == "host.console_log_outside", r.text
        assert "PROVISIONER_CONSOLE_LOG_DIR" in r.json()["hint"] and r.json()["console_log_dir"]
    r = metal.post("operator", "/v1/hosts", {"name": "ssh-out", "address": "127.0.0.1", "connection": "local",
                                             "console_log": "relative/path.log"})
    assert r.status_code == 422 and r.json()["code"] == "request.invalid", r.text
    assert metal.get("operator", "/v1/hosts", params={"name": "bm-out"}).json()["total"] == 0
    secret = tmp_path / "worker-secret.txt"
    secret.write_text("not for the job's readers\n")
    link = tmp_path / "consoles" / "bm-serial.log"
    link.symlink_to(secret)
    bare_metal_host(metal, emulator, console_log=str(link))
    job = canary_job(metal, image(metal, tmp_path))
    assert job["error_code"] == "boot.timeout", job
    assert f"its serial console log {link} could not be read" in job["error"], job["error"]
    events = metal.get("admin", f"/v1/jobs/{job['id']}/events", params={"limit": 200}).json()["items"]
    assert not [e for e in events if e["event"] == "console"], events
    assert "not for the job's readers" not in json.dumps(events) + job["error"]
