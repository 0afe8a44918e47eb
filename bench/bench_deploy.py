"""Power-on to handover of a bare-metal lab VM, per phase: the service's deploy (a canary job) against
the same steps run by hand in the same run: `curl` to the BMC (Redfish), the boot ISO and the image
served by a plain HTTP server, waiting for SSH with `ssh-keyscan`, and the same playbooks run by bare
`ansible-playbook` with the same inputs. The ratio is what the service's orchestration costs (queue,
claims, events, the database, the per-phase bookkeeping).

Both start from the same state: the VM powered off with blank disks (the service's run from the VM as
`bm-up` made it; the hand run after the service released the host, which cleaned every disk), the
same ramdisk and image, the same phase inputs (the request's parameters read back from the service).

Run inside the lab namespace with the lab up and one bare-metal VM, after building both images
(outside the namespace: debootstrap needs the mirror):
    images/build-ramdisk.sh && images/build-disk-image.sh debian-12-boot 2026.12
    vagrant/lab up --hosts 1 --bare-metal 1
    vagrant/lab exec -- .venv/bin/python bench/bench_deploy.py [--host bm1]
DESTRUCTIVE for the VM's disks. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bare_playbook  # noqa: E402  (beside this script)

from provisioner.core.host_keys import known_hosts_line  # noqa: E402
from provisioner.imaging.boot_iso import write_boot_iso_file  # noqa: E402
from provisioner.services import deploy  # noqa: E402
from provisioner.services.host_key_gen import new_host_key  # noqa: E402
from provisioner.services.phase_results import record_inspection  # noqa: E402
from provisioner.store.models import Host  # noqa: E402
from tests.integration.procs import Api, Service, admin_token, free_port, operator  # noqa: E402
from workers.inventory import extravars_for, inventory_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATE = Path("/run/provisioner-lab")
IMAGE = ("debian-12-boot", "2026.12")
RAMDISK = ["inspect", "wipe", "image", "configure"]
IN_OS = ["raid", "firewall", "backup", "restore-verify", "handover"]
PHASES = ["ramdisk-boot", "ramdisk-wait", *RAMDISK, "disk-boot", "os-wait", *IN_OS]


def build_dir(script: str, *args: str) -> Path:
    out = subprocess.run([str(ROOT / "images" / script), "--print-dir", *args], capture_output=True, text=True,
                         check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------------------------------
# the service


def service_run(tmp: Path, rec: dict[str, Any], ramdisk_iso: Path, disk: Path, gateway: str
                ) -> tuple[dict[str, Any], dict[str, Any], CpuMeter]:
    """Enroll, publish, canary (the measured deploy), release (cleans the disks).
    -> job, request params, the CPU the canary cost each side."""
    port = free_port()
    env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_BACKUP_STORE": str(STATE / "backup.json"),
           "PROVISIONER_PUBLIC_URL": f"http://{gateway}:{port}", "PROVISIONER_RAMDISK_ISO": str(ramdisk_iso),
           "PROVISIONER_PHASE_TIMEOUTS": json.dumps({"ramdisk-wait": 900, "os-wait": 900})}
    svc = Service(env, tmp / "service.log", worker=True, host="0.0.0.0", port=port)
    try:
        admin = Api(svc.url, admin_token(env))
        op = operator(admin, svc.url)
        tenant = admin.post("/v1/tenants", {"name": "bench", "quota": {"lab": 2}})["id"]
        u = admin.post("/v1/users", {"name": "imgteam", "role": "imager", "tenant_id": tenant})
        imager = Api(svc.url, admin.post(f"/v1/users/{u['id']}/tokens", {"name": "t"})["token"])
        host = op.post("/v1/hosts", {"name": rec["name"], "address": rec["address"], "pool": "lab",
                                     "commission": True, "bmc": {
                                         "url": rec["bmc_url"], "username": rec["username"],
                                         "password": Path(rec["password_file"]).read_bytes().decode(),
                                         "cert_pem": Path(rec["cert"]).read_text()}})
        commission = op.get("/v1/jobs", host_id=host["id"], kind="commission")["items"][0]
        assert admin.wait_job(commission["id"], timeout=300)["status"] == "succeeded"
        info = json.loads((disk / "image.json").read_text())
        with (disk / f"{IMAGE[0]}.raw.zst").open("rb") as f:
            r = imager.c.post("/v1/images", params={
                "name": f"{IMAGE[0]}-{IMAGE[1]}", "version": IMAGE[1], "os_name": "debian", "os_version": "12",
                "format": "raw.zst", "expected_sha256": info["sha256"]}, content=f,
                headers={"content-type": "application/octet-stream"}, timeout=600)
        assert r.status_code == 201, r.text
        meter = CpuMeter(rec, svc.p.pid)
        canary = imager.post(f"/v1/images/{r.json()['id']}/canary", {"pool": "lab"})
        # A slow poll: the by-hand run has no client asking; the phases' own timestamps are measured.
        job = admin.wait_job(canary["job_id"], timeout=3600, poll=3.0)
        meter.stop()
        assert job["status"] == "succeeded", job
        params = admin.get(f"/v1/requests/{job['request_id']}")["params"]
        rel = imager.post(f"/v1/requests/{job['request_id']}/release")
        released = admin.wait_job(max(rel["job_ids"]), timeout=1800)
        assert released["status"] == "succeeded", released
        return job, params, meter
    finally:
        svc.stop()


# --------------------------------------------------------------------------------------------------
# by hand


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading (the BMC probing the ISO, a writer's retry) is no error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def http_dir(directory: Path, bind: str) -> Iterator[str]:
    """`python3 -m http.server` in a thread: what someone doing this by hand would serve files with."""
    server = Server((bind, 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{bind}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Curl:
    """The BMC by hand: curl with the BMC's certificate and credentials, JSON in and out."""

    def __init__(self, rec: dict[str, Any], tmp: Path) -> None:
        self.base = rec["bmc_url"].split("/redfish/", 1)[0]
        netrc = tmp / "bmc.netrc"
        host = self.base.split("//", 1)[1].split(":", 1)[0]
        netrc.write_text(f"machine {host} login {rec['username']} password "
                         f"{Path(rec['password_file']).read_text()}\n")
        netrc.chmod(0o600)
        self.args = ["curl", "-sS", "--fail-with-body", "--cacert", rec["cert"], "--netrc-file", str(netrc),
                     "-H", "Content-Type: application/json"]
        # The BMC serves this VM's system among others: the one with its UUID.
        members = [m["@odata.id"] for m in self("GET", "/redfish/v1/Systems")["Members"]]
        self.system = self.base + next(m for m in members if self("GET", m).get("UUID") == rec["uuid"])

    def __call__(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = path if path.startswith("https://") else self.base + path
        cmd = [*self.args, "-X", method, url] + (["-d", json.dumps(body)] if body is not None else [])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (cmd[-3:], out.stdout, out.stderr)
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def cd(self) -> str:
        system = self("GET", self.system)
        link = (system.get("VirtualMedia") or {}).get("@odata.id")
        if link is None:
            manager = system["Links"]["ManagedBy"][0]["@odata.id"]
            link = self("GET", manager)["VirtualMedia"]["@odata.id"]
        for member in self("GET", link)["Members"]:
            media = self("GET", member["@odata.id"])
            if "CD" in media.get("MediaTypes", []) or "DVD" in media.get("MediaTypes", []):
                return str(media["@odata.id"])
        raise AssertionError("the BMC offers no CD")

    def power(self) -> str:
        return str(self("GET", self.system)["PowerState"])

    def reset(self, kind: str) -> None:
        self("POST", f"{self.system}/Actions/ComputerSystem.Reset", {"ResetType": kind})

    def boot_from_cd(self, iso_url: str) -> None:
        """Off, the ISO in the CD (any other out), boot from it once, on: the ramdisk boot's requests."""
        if self.power() != "Off":
            self.reset("ForceOff")
        cd = self.cd()
        if self("GET", cd).get("Inserted"):
            self("POST", f"{cd}/Actions/VirtualMedia.EjectMedia", {})
        self("POST", f"{cd}/Actions/VirtualMedia.InsertMedia", {"Image": iso_url, "Inserted": True,
                                                                 "WriteProtected": True})
        self.boot("Cd", "Once")
        self.reset("On")

    def boot(self, target: str, enabled: str) -> None:
        self("PATCH", self.system, {"Boot": {"BootSourceOverrideTarget": target,
                                             "BootSourceOverrideEnabled": enabled}})


def wait_key(address: str, public: str, timeout: float = 900) -> None:
    want = public.split()[:2]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ssh-keyscan", "-T", "5", "-t", want[0], address], capture_output=True, text=True)
        if any(line.split()[1:3] == want for line in out.stdout.splitlines() if not line.startswith("#")):
            return
        time.sleep(3)
    raise AssertionError(f"{address} did not present the expected key within {timeout} s")


def playbook(name: str, inventory: dict[str, Any], extravars: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Bare ansible-playbook; -> the custom stats the playbook set (its prov_result)."""
    inv, ev = tmp / "inv.json", tmp / f"ev-{name}.json"
    inv.write_text(json.dumps(inventory))
    ev.write_text(json.dumps(extravars))
    ev.chmod(0o600)
    result = bare_playbook.custom_stats(bare_playbook.run(ROOT / "playbooks" / f"{name}.yml", inv, ev))
    return result.get("prov_result") or {}


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and of its children it has reaped (0 once it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


def machine_busy() -> float:
    """CPU seconds every CPU of this machine spent busy (all processes, the kernel, interrupts)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


class CpuMeter:
    """CPU seconds each side spent while one run was measured: the controller (this process and its
    children: the bare ansible-playbook runs, curl, or the service with the ansible-playbook runs it
    reaped), the BMC emulator, and the rest of the machine (the VM's QEMU, which is a new process at
    every power-on, libvirt, the kernel). On two cores the controller's CPU is taken from the
    emulated machine, which is what a slower service run would show."""

    def __init__(self, rec: dict[str, Any], service_pid: int | None = None) -> None:
        self.emulator_pid = rec["emulator_pid"]
        self.service_pid = service_pid
        self.wall = 0.0
        self.bmc_log = Path(rec["emulator_log"])
        self.bmc_log_at = self.bmc_log.stat().st_size
        self.bmc_requests = 0  # HTTP requests the BMC logged during the run (each checks the password)
        self.start = self._read()
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {"controller": process_cpu(os.getpid()) + (process_cpu(self.service_pid) if self.service_pid else 0.0),
                "BMC emulator": process_cpu(self.emulator_pid), "machine": machine_busy(), "wall": time.monotonic()}

    def stop(self) -> None:
        end = self._read()
        self.used = {name: end[name] - self.start[name] for name in end if name != "wall"}
        machine = self.used.pop("machine")
        self.used["rest (QEMU, kernel)"] = machine - self.used["controller"] - self.used["BMC emulator"]
        self.wall = end["wall"] - self.start["wall"]
        with self.bmc_log.open("rb") as f:
            f.seek(self.bmc_log_at)
            self.bmc_requests = sum(1 for line in f if re.search(rb'(GET|POST|PATCH|PUT|DELETE) /redfish/', line))


def timed(times: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    result = fn()
    times[name] = time.perf_counter() - t0
    return result


def by_hand(tmp: Path, rec: dict[str, Any], ramdisk_iso: Path, disk: Path, gateway: str,
            params: dict[str, Any]) -> tuple[dict[str, float], CpuMeter]:
    bmc = Curl(rec, tmp)
    host = Host(id=1, name=rec["name"], address=rec["address"], driver="redfish", hardware={}, labels={})
    keys = deploy.DeployKeys(new_host_key("ramdisk"), new_host_key("login"), new_host_key("os"))
    management = new_host_key("management")
    login_key, mgmt_key = tmp / "login", tmp / "management"
    for path, pair in ((login_key, keys.ramdisk_login_key), (mgmt_key, management)):
        path.write_bytes(pair.private)
        path.chmod(0o600)
    bmap = json.loads((disk / f"{IMAGE[0]}.bmap.json").read_text())
    backup = bare_playbook.lab_backup("hand")
    media = tmp / "media"
    media.mkdir()
    times: dict[str, float] = {}

    def ramdisk_boot() -> None:
        # the per-job ISO with the same files the service writes (the job's login key, its host key)
        write_boot_iso_file(ramdisk_iso, deploy.ramdisk_files(host, keys), media / "boot.iso")
        bmc.boot_from_cd(f"{iso_url}/boot.iso")

    def in_ramdisk(name: str, extra: dict[str, Any]) -> dict[str, Any]:
        kh = tmp / "kh-ramdisk"
        kh.write_text(known_hosts_line(rec["address"], 22, keys.ramdisk_host_key.public))
        h = {"name": host.name, "connection": "ssh", "address": rec["address"], "port": 22, "ssh_user": "root",
             "hardware": host.hardware, "labels": {}}
        ev = extravars_for({"id": 0, "kind": "provision"}, h, {**params, **extra}, None)
        return playbook(name, inventory_for(h, str(login_key), str(kh)), ev, tmp)

    def in_os(name: str) -> None:
        kh = tmp / "kh-os"
        kh.write_text(known_hosts_line(rec["address"], 22, keys.os_host_key.public))
        h = {"name": host.name, "connection": "ssh", "address": rec["address"], "port": 22, "ssh_user": "root",
             "hardware": host.hardware, "labels": {}}
        ev = extravars_for({"id": 0, "kind": "provision"}, h, params,
                           backup if name in ("backup", "restore-verify") else None)
        playbook(name, inventory_for(h, str(mgmt_key), str(kh)), ev, tmp)

    def disk_boot() -> None:
        cd = bmc.cd()
        if bmc("GET", cd).get("Inserted"):
            bmc("POST", f"{cd}/Actions/VirtualMedia.EjectMedia", {})
        bmc.boot("Hdd", "Continuous")
        bmc.reset("ForceRestart" if bmc.power() == "On" else "On")

    with http_dir(media, gateway) as iso_url, http_dir(disk, gateway) as image_url:
        meter = CpuMeter(rec)
        started = time.perf_counter()
        timed(times, "ramdisk-boot", ramdisk_boot)
        timed(times, "ramdisk-wait", lambda: wait_key(rec["address"], keys.ramdisk_host_key.public))
        inspected = timed(times, "inspect", lambda: in_ramdisk("inspect", {}))
        assert record_inspection(host, inspected["inspect"]) is None, host.hardware
        root = f"/dev/{host.hardware['root_disk']}".replace("/dev//dev/", "/dev/")
        timed(times, "wipe", lambda: in_ramdisk("wipe", {"prov_root_disk": root}))
        spec = {"url": f"{image_url}/{IMAGE[0]}.raw.zst", "sha256": bmap["sha256"], "bmap": bmap,
                "compression": "zstd", "target": root, "name": IMAGE[0], "version": IMAGE[1],
                "require_os_release": True}
        timed(times, "image", lambda: in_ramdisk("image", {"prov_root_disk": root, "image_spec": spec}))
        bundle = base64.b64encode(deploy.os_bundle(host, keys, management.public)).decode()
        timed(times, "configure", lambda: in_ramdisk("configure", {"prov_root_disk": root,
                                                                   "prov_config_bundle_b64": bundle}))
        timed(times, "disk-boot", disk_boot)
        timed(times, "os-wait", lambda: wait_key(rec["address"], keys.os_host_key.public))
        for name in IN_OS:
            timed(times, name, functools.partial(in_os, name))
        times["total"] = time.perf_counter() - started
        meter.stop()
    return times, meter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="bm1")
    args = ap.parse_args()
    rec = next(h for h in json.loads((STATE / "bmc.json").read_text()) if h["name"] == args.host)
    gateway = json.loads((STATE / "backup.json").read_text())["host"]
    ramdisk_iso = build_dir("build-ramdisk.sh") / "deploy-ramdisk.iso"
    disk = build_dir("build-disk-image.sh", *IMAGE)
    assert ramdisk_iso.is_file() and (disk / "image.json").is_file(), "build both images first (see the docstring)"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job, params, svc_cpu = service_run(tmp, rec, ramdisk_iso, disk, gateway)
        hand, hand_cpu = by_hand(tmp, rec, ramdisk_iso, disk, gateway, params)
    phases = {p["name"]: p for p in job["phases"]}
    svc_total = ts(job["phases"][-1]["ended_at"]) - ts(job["phases"][0]["started_at"])
    print(f"\npower-on to handover on {rec['name']} (QEMU TCG), per phase")
    print(f"{'phase':16s} {'service s':>10s} {'by hand s':>10s} {'ratio':>7s}")
    for name in PHASES:
        took = phases[name]["duration_s"]
        print(f"{name:16s} {took:10.1f} {hand[name]:10.1f} {took / hand[name]:7.2f}")
    print(f"{'total':16s} {svc_total:10.1f} {hand['total']:10.1f} {svc_total / hand['total']:7.3f}")
    print(f"\nservice, first phase started -> last phase ended: {svc_total:.1f} s (goal <= 360 s under TCG); "
          f"by hand {hand['total']:.1f} s; ratio {svc_total / hand['total']:.3f} (goal <= 1.05). "
          f"Sum of the service's phases {sum(phases[n]['duration_s'] for n in PHASES):.1f} s: the rest is "
          f"the engine between phases.")
    print(f"\nCPU seconds while each run was measured (service {svc_cpu.wall:.0f} s incl. its poll slack, "
          f"by hand {hand_cpu.wall:.0f} s), and per second of it")
    print(f"{'side':20s} {'service':>9s} {'/s':>6s} {'by hand':>9s} {'/s':>6s}")
    for side in ("controller", "BMC emulator", "rest (QEMU, kernel)"):
        a, b = svc_cpu.used[side], hand_cpu.used[side]
        print(f"{side:20s} {a:9.1f} {a / svc_cpu.wall:6.2f} {b:9.1f} {b / hand_cpu.wall:6.2f}")
    print(f"{'BMC requests':20s} {svc_cpu.bmc_requests:9d} {'':6s} {hand_cpu.bmc_requests:9d}")


if __name__ == "__main__":
    main()
