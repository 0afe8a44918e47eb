"""A bare-metal host deployed through its Redfish BMC, end to end on a lab VM with no OS.

The VM (`vagrant/lab bm-up`, SeaBIOS, a 4 GiB root disk and two 1 GiB data disks, its BMC a
sushy-emulator over the lab's libvirtd) is enrolled by its BMC through the CLI and commissioned. A
whole-disk Debian image built by images/build-disk-image.sh is published; its canary deploys it: the
BMC boots the deploy ramdisk (images/build-ramdisk.sh) from a per-job ISO the worker serves, the
ramdisk inspects, wipes, writes the image onto the root disk and writes the host's configuration
into it, the BMC boots the disk, and RAID, firewall, backup, restore test and handover run inside the
deployed OS. Checked from outside over SSH: the identity file and os-release match the catalogue
entry, the image's own boot loader started the kernel, / is on the root disk, the array is [UU], the
input policy is drop, the restore test passed, the customer's key logs in, and the host presents the
key the service pinned. Release cleans every disk in the ramdisk (sampled read-back: zeros) and the
BMC reports power Off.

Runs inside the lab's network namespace (scripts/e2e.sh). Builds or reuses both images (cached by
input hash: ~1-2 min each cold on a quiet machine).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.job_log import wait_job
from tests.e2e.service_cli import cli
from tests.integration.procs import Api, Service, admin_token, free_port, operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISIONER_LAB_STATE", "/run/provisioner-lab"))
NAME = os.environ.get("PROVISIONER_E2E_DEPLOY_HOST", "bm2")
CONSOLE_DIR = "/var/log/libvirt/qemu"
UNROUTABLE = "192.0.2.10"  # TEST-NET-1: nothing in the lab answers there
SSH = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
       "-o", "ConnectTimeout=10"]


def run(*args: str, timeout: float = 1800) -> str:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-4000:])
    return out.stdout


def build(script: str, *args: str) -> Path:
    """Builds (or finds in its cache) an image; -> its folder."""
    return Path(run(str(ROOT / "images" / script), *args).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def machine() -> Iterator[dict[str, Any]]:
    out = run(str(ROOT / "vagrant" / "lab"), "bm-up", NAME, timeout=300)
    rec = json.loads(out.strip().splitlines()[-1])
    try:
        yield rec
    finally:
        subprocess.run([str(ROOT / "vagrant" / "lab"), "bm-destroy", NAME], capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def artefacts() -> dict[str, Any]:
    ramdisk = build("build-ramdisk.sh")
    disk = build("build-disk-image.sh", "debian-12-boot", "2026.12")
    disk2 = build("build-disk-image.sh", "debian-12-boot", "2026.12.1")  # the reimage's second version
    return {"ramdisk_iso": ramdisk / "deploy-ramdisk.iso", "disk": disk, "disk2": disk2,
            "disk_info": json.loads((disk / "image.json").read_text())}


@contextmanager
def service(tmp: Path, artefacts: dict[str, Any], timeouts: dict[str, float],
            **extra_env: str) -> Iterator[dict[str, Any]]:
    gateway = json.loads((STATE / "backup.json").read_text())["host"]
    port = free_port()
    env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_BACKUP_STORE": str(STATE / "backup.json"),
           "PROVISIONER_RECONCILE_SECONDS": "5", "PROVISIONER_PUBLIC_URL": f"http://{gateway}:{port}",
           "PROVISIONER_RAMDISK_ISO": str(artefacts["ramdisk_iso"]),
           # where libvirt writes the lab VMs' serial consoles (vagrant/bare-metal.sh)
           "PROVISIONER_CONSOLE_LOG_DIR": CONSOLE_DIR,
           "PROVISIONER_PHASE_TIMEOUTS": json.dumps(timeouts), **extra_env}
    svc = Service(env, tmp / "service.log", worker=True, host="0.0.0.0", port=port)
    try:
        admin = Api(svc.url, admin_token(env))
        key = tmp / "customer_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-customer", "-f", str(key)],
                       check=True)
        op = operator(admin, svc.url)
        tenant_id = admin.post("/v1/tenants", {"name": "metal", "quota": {"lab": 2}})["id"]
        u = admin.post("/v1/users", {"name": "cust-metal", "role": "customer", "tenant_id": tenant_id})
        cust = Api(svc.url, admin.post(f"/v1/users/{u['id']}/tokens", {"name": "t"})["token"])
        u = admin.post("/v1/users", {"name": "imgteam", "role": "imager", "tenant_id": tenant_id})
        imager = Api(svc.url, admin.post(f"/v1/users/{u['id']}/tokens", {"name": "t"})["token"])
        yield {"service": svc, "admin": admin, "op": op, "cust": cust, "imager": imager, "url": svc.url,
               "op_token": op.c.headers["Authorization"].split()[1], "key": str(key),
               "pub": (tmp / "customer_key.pub").read_text().strip(), "tmp": tmp, "log": tmp / "service.log"}
    finally:
        svc.stop()
        print(f"\nservice log tail:\n{svc.tail(40)}")


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, artefacts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # Under TCG on a busy 2-core machine a boot takes 1.5-4 min: room, but a hung boot still fails.
    with service(tmp_path_factory.mktemp("deploy-svc"), artefacts, {"ramdisk-wait": 600, "os-wait": 600}) as s:
        yield s


def publish(imager: Api, disk: Path, info: dict[str, Any], name: str) -> dict[str, Any]:
    with (disk / f"{info['name']}.raw.zst").open("rb") as f:
        r = imager.c.post("/v1/images", params={
            "name": name, "version": info["version"], "os_name": "debian", "os_version": "12", "format": "raw.zst",
            "expected_sha256": info["sha256"]}, content=f, headers={"content-type": "application/octet-stream"},
            timeout=600)
    assert r.status_code == 201, r.text
    return r.json()


def known_hosts(tmp: Path, address: str, key: str) -> Path:
    path = tmp / f"known_hosts-{address}"
    path.write_text(f"{address} {key}\n")
    return path


def ssh(address: str, kh: Path, key: str, user: str, cmd: str, check: bool = True) -> str:
    out = subprocess.run([*SSH, "-o", f"UserKnownHostsFile={kh}", "-i", key, f"{user}@{address}", cmd],
                         capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, (cmd, out.stdout, out.stderr)
    return out.stdout


def test_bare_metal_host_deployed_through_its_bmc(machine: dict[str, Any], svc: dict[str, Any],
                                                  artefacts: dict[str, Any]) -> None:
    rec, op, admin, cust, imager = machine, svc["op"], svc["admin"], svc["cust"], svc["imager"]
    info = artefacts["disk_info"]
    address = rec["address"]

    # Enrolled by its BMC (the README's command), commissioned: facts re-read, powered off, available.
    host = cli(svc, "hosts", "enroll", NAME, address, "--pool", "lab", "--commission",
               "--bmc-url", rec["bmc_url"], "--bmc-user", rec["username"],
               "--bmc-password-file", rec["password_file"], "--bmc-cert", rec["cert"],
               "--console-log", rec["serial_log"])
    assert host["driver"] == "redfish" and host["address"] == address, host
    assert host["console_log"] == rec["serial_log"], host
    hid = host["id"]
    job = wait_job(admin, op.get("/v1/jobs", host_id=hid, kind="commission")["items"][0]["id"], 300)
    assert job["status"] == "succeeded", job
    assert op.get(f"/v1/hosts/{hid}")["state"] == "available"
    assert op.get(f"/v1/hosts/{hid}/power")["power_state"] == "Off"

    # Published, and its canary deploys it through the BMC.
    img = publish(imager, artefacts["disk"], info, "debian-12-boot-2026.12")
    canary = imager.post(f"/v1/images/{img['id']}/canary", {"pool": "lab", "ssh_public_key": svc["pub"]})
    t0 = time.monotonic()
    job = wait_job(admin, canary["job_id"], 2400)
    print(f"canary deploy: {time.monotonic() - t0:.0f} s")
    assert job["status"] == "succeeded", job
    assert [p["name"] for p in job["phases"]] == [
        "ramdisk-boot", "ramdisk-wait", "inspect", "wipe", "image", "configure", "disk-boot", "os-wait",
        "raid", "firewall", "backup", "restore-verify", "handover"], job["phases"]
    img = imager.get(f"/v1/images/{img['id']}")
    assert img["canary_result"]["passed"] is True, img["canary_result"]
    assert "booted the image" in img["canary_result"]["reason"], img["canary_result"]
    h = admin.get(f"/v1/hosts/{hid}")
    assert h["hardware"]["root_disk"], h["hardware"]

    # Checked from outside over SSH, as the customer (the canary's key), against the pinned key.
    kh = known_hosts(svc["tmp"], address, h["host_key"])
    identity = json.loads(ssh(address, kh, svc["key"], "canary", "cat /etc/provisioner-image.json"))
    assert (identity["name"], identity["version"], identity["build_id"]) == (
        info["name"], info["version"], info["build_id"]), identity
    assert identity["version"] == img["version"]
    os_release = ssh(address, kh, svc["key"], "canary", "cat /etc/os-release")
    assert 'VERSION_ID="12"' in os_release and "ID=debian" in os_release, os_release
    cmdline = ssh(address, kh, svc["key"], "canary", "cat /proc/cmdline")
    assert cmdline.startswith("BOOT_IMAGE="), cmdline
    root = ssh(address, kh, svc["key"], "canary", "findmnt -no SOURCE /").strip()
    # The root disk is stored by its /dev/disk/by-id link (the serial the lab gave it): the deployed
    # OS resolves it to its own kernel name.
    assert h["hardware"]["root_disk"].startswith("/dev/disk/by-id/"), h["hardware"]
    disk = ssh(address, kh, svc["key"], "canary", f"readlink -f {shlex.quote(h['hardware']['root_disk'])}").strip()
    assert disk.startswith("/dev/") and root.startswith(disk), (root, disk, h["hardware"]["root_disk"])
    mdstat = ssh(address, kh, svc["key"], "canary", "cat /proc/mdstat")
    assert "[UU]" in mdstat, mdstat
    ruleset = json.loads(ssh(address, kh, svc["key"], "canary", "sudo -n nft -j list ruleset"))
    inp = next(x["chain"] for x in ruleset["nftables"] if "chain" in x and x["chain"].get("hook") == "input")
    assert inp["policy"] == "drop", inp
    assert h["last_restore_passed"] is True, h
    presented = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", address], capture_output=True,
                               text=True).stdout.split()
    assert " ".join(presented[1:3]) == " ".join(h["host_key"].split()[:2]), (presented, h["host_key"])

    # Promoted; released: every disk cleaned in the ramdisk, power off.
    assert imager.post(f"/v1/images/{img['id']}/promote", {"to": "stable"})["channel"] == "stable"
    release(svc, imager, job["request_id"], hid)

    # A customer requests the stable image: deployed again, with a new host key the service pinned;
    # the customer's key logs in as their user.
    req = cust.post("/v1/requests", {"image": img["name"], "pool": "lab", "ssh_public_key": svc["pub"]})
    t0 = time.monotonic()
    job = wait_job(admin, req["job_ids"][0], 2400)
    print(f"customer deploy: {time.monotonic() - t0:.0f} s")
    assert job["status"] == "succeeded", job
    h2 = cust.get(f"/v1/hosts/{hid}")
    assert h2["state"] == "active" and h2["host_key"] != h["host_key"], h2
    kh = known_hosts(svc["tmp"], address, h2["host_key"])
    assert ssh(address, kh, svc["key"], "customer", "id -un").strip() == "customer"
    identity = json.loads(ssh(address, kh, svc["key"], "customer", "cat /etc/provisioner-image.json"))
    assert identity["version"] == img["version"] and identity["build_id"] == info["build_id"], identity
    presented = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", address], capture_output=True,
                               text=True).stdout.split()
    assert " ".join(presented[1:3]) == " ".join(h2["host_key"].split()[:2]), (presented, h2["host_key"])

    # Reimaged to a second version, the data array kept: a file on the array survives, the identity
    # file names the new version, backups are set up again and the restore test passes. (The lab's
    # policy lets operators try candidates on lab pools; a customer reimages to stable images.)
    md = h2["results"]["raid"]["device"]
    marker = f"kept-{time.time_ns()}"
    ssh(address, kh, svc["key"], "customer", f"sudo mkfs.ext4 -q -F {md} && sudo mount {md} /mnt && "
        f"echo {marker} | sudo tee /mnt/marker >/dev/null && sudo umount /mnt")
    disk2 = artefacts["disk2"]
    info2 = json.loads((disk2 / "image.json").read_text())
    img2 = publish(imager, disk2, info2, "debian-12-boot-2026.12.1")
    svc["admin"].c.put("/v1/policy", json={"lab_image_roles": ["imager", "operator"]}).raise_for_status()
    t0 = time.monotonic()
    re_job = cli(svc, "requests", "reimage", str(req["id"]), "--image", img2["name"])
    job = wait_job(admin, max(re_job["job_ids"]), 2400)
    print(f"reimage: {time.monotonic() - t0:.0f} s")
    assert job["status"] == "succeeded" and job["kind"] == "reimage", job
    h3 = cust.get(f"/v1/hosts/{hid}")
    assert h3["state"] == "active" and h3["last_restore_passed"] is True, h3
    kh = known_hosts(svc["tmp"], address, h3["host_key"])
    identity = json.loads(ssh(address, kh, svc["key"], "customer", "cat /etc/provisioner-image.json"))
    assert identity["version"] == info2["version"] == img2["version"], identity
    md = h3["results"]["raid"]["device"]
    kept = ssh(address, kh, svc["key"], "customer", f"sudo mount {md} /mnt && cat /mnt/marker; sudo umount /mnt")
    assert kept.strip() == marker, kept
    assert "[UU]" in ssh(address, kh, svc["key"], "customer", "cat /proc/mdstat")
    release(svc, cust, req["id"], hid)

    # A bit rots in the store: the writer in the ramdisk catches it; the job fails before the boot
    # device is switched (no disk-boot), the host is not handed over, the image is flagged.
    stored = Path(admin.get(f"/v1/images/{img['id']}")["stored_path"])
    stored = stored if stored.is_absolute() else svc["tmp"] / "data" / "images" / stored
    with stored.open("r+b") as fh:
        fh.seek(stored.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x01]))
    req = cust.post("/v1/requests", {"image": img["name"], "pool": "lab", "ssh_public_key": svc["pub"]})
    job = wait_job(admin, req["job_ids"][0], 1800)
    assert job["status"] == "failed" and job["error_code"] == "image_corrupt", job
    names = [p["name"] for p in job["phases"]]
    assert names[-1] == "image" and "disk-boot" not in names, names
    assert admin.get(f"/v1/hosts/{hid}")["state"] == "failed"
    assert imager.get(f"/v1/images/{img['id']}")["flagged"] is True


def release(svc: dict[str, Any], who: Api, request_id: int, hid: int) -> None:
    """Released: every disk cleaned in the ramdisk (sampled read-back: zeros), then powered off."""
    rel = who.post(f"/v1/requests/{request_id}/release")
    job = wait_job(svc["admin"], max(rel["job_ids"]), 1800)
    assert job["status"] == "succeeded", job
    assert [p["name"] for p in job["phases"]] == ["ramdisk-boot", "ramdisk-wait", "clean", "power-off"]
    h = svc["admin"].get(f"/v1/hosts/{hid}")
    assert h["state"] == "available", h
    assert svc["op"].get(f"/v1/hosts/{hid}/power")["power_state"] == "Off"
    clean = h["results"]["clean"]
    assert sorted(d["name"] for d in clean["disks"]) == ["/dev/vda", "/dev/vdb", "/dev/vdc"], clean
    assert all(d["samples"] > 1000 and d["method"] in ("discard", "zeroout", "overwrite") for d in clean["disks"])
    print("clean:", json.dumps([(d["name"], d["method"], d["seconds"], d["samples"]) for d in clean["disks"]]))


def test_a_ramdisk_that_never_answers_shows_its_serial_console(machine: dict[str, Any], artefacts: dict[str, Any],
                                                                tmp_path: Path) -> None:
    """The same VM enrolled (in a second service, with a short ramdisk wait) at an address where
    nothing answers: the BMC boots the ramdisk for real, which comes up on its own address, so SSH at
    the enrolled one never answers. The job fails with boot.timeout and carries the end of the VM's
    serial console, where the ramdisk said it applied the job's config."""
    rec = machine
    # One attempt of 90 s: the ramdisk prints its config line within ~30-40 s of power-on under load.
    with service(tmp_path, artefacts, {"ramdisk-wait": 90}, PROVISIONER_MAX_ATTEMPTS="1") as svc:
        host = cli(svc, "hosts", "enroll", f"{NAME}-lost", UNROUTABLE, "--pool", "lab", "--commission",
                   "--bmc-url", rec["bmc_url"], "--bmc-user", rec["username"],
                   "--bmc-password-file", rec["password_file"], "--bmc-cert", rec["cert"],
                   "--console-log", rec["serial_log"])
        commission = svc["op"].get("/v1/jobs", host_id=host["id"], kind="commission")["items"][0]
        assert wait_job(svc["admin"], commission["id"], 300)["status"] == "succeeded"
        img = publish(svc["imager"], artefacts["disk"], artefacts["disk_info"], "debian-12-boot-lost")
        canary = svc["imager"].post(f"/v1/images/{img['id']}/canary", {"pool": "lab", "ssh_public_key": svc["pub"]})
        job = wait_job(svc["admin"], canary["job_id"], 900)
        assert job["status"] == "failed" and job["error_code"] == "boot.timeout", job
        assert [p["name"] for p in job["phases"]] == ["ramdisk-boot", "ramdisk-wait"], job["phases"]
        assert UNROUTABLE in job["error"] and f"of its serial console ({rec['serial_log']})" in job["error"], job
        events = svc["admin"].get(f"/v1/jobs/{job['id']}/events", limit=500)["items"]
        console = [e for e in events if e["event"] == "console"]
        assert console, [e["task"] for e in events]
        text = console[-1]["stdout"]
        print("serial console attached to the job:\n" + text)
        assert "provcfg: applied the per-job config" in text, text
        assert "\x1b" not in text and "\r" not in text
        assert svc["admin"].get(f"/v1/hosts/{host['id']}")["state"] == "failed"
