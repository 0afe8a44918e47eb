"""The deploy ramdisk's phases against the real ramdisk: it boots under plain QEMU (TCG, SeaBIOS, as
tests/e2e/test_image_boot.py) from its ISO with a per-job config ISO, a 4 GiB root disk and two
1 GiB data disks; then inspect → wipe → image → configure run through the worker's ansible bridge
over SSH (the ramdisk's host key pinned), the image served over HTTP Range from 127.0.0.1 (the
guest's 10.0.2.2). Then the VM boots from the written disk: its own GRUB, the host key the service
generated, the image's identity, / on the root disk, and probe finds the two data disks only.
Then the ramdisk once more: clean erases every disk, and every byte of the disk files is zero.

Uses the cached ramdisk and disk image (images/build-ramdisk.sh, images/build-disk-image.sh;
skipped when they are not built for the current inputs). `-m boot`, as images/verify-boot.sh.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.core.host_config import HostConfig, bundle, config_files
from provisioner.core.host_keys import fingerprint
from provisioner.core.root_disk import root_disk
from provisioner.imaging.config_iso import config_iso
from provisioner.services.host_key_gen import new_host_key
from tests.e2e.test_image_boot import IMAGE_NAME, IMAGE_VERSION, Login, Vm
from tests.integration.test_image_writer import TOKEN, ImageServer
from workers.ansible_bridge import PhaseOutcome, run_playbook
from workers.inventory import inventory_for

pytestmark = [pytest.mark.e2e, pytest.mark.boot, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
MiB = 1 << 20


def _cached(script: str, *args: str) -> Path:
    out = subprocess.run([str(REPO / "images" / script), "--print-dir", *args], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not (Path(out) / ("ramdisk.json" if "ramdisk" in script else "image.json")).exists():
        pytest.skip(f"{script} has not built {out} yet")
    return Path(out)


@pytest.fixture
def login(tmp_path: Path) -> Login:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisioner@test", "-f",
                    str(tmp_path / "id")], check=True)
    return Login(tmp_path / "id", (tmp_path / "id.pub").read_text().strip())


@pytest.fixture
def server() -> Iterator[ImageServer]:
    srv = ImageServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_deploy_in_the_ramdisk_then_boot_the_disk(login: Login, server: ImageServer, tmp_path: Path) -> None:
    ramdisk = _cached("build-ramdisk.sh")
    image = _cached("build-disk-image.sh", IMAGE_NAME, IMAGE_VERSION)
    info = json.loads((image / "image.json").read_text())
    bmap = json.loads((image / info["files"]["bmap"]).read_text())
    server.files["/img/disk.raw"] = image / info["files"]["raw"]

    disks = {"root": 4096 * MiB, "data1": 1024 * MiB, "data2": 1024 * MiB}
    for name, size in disks.items():
        (tmp_path / f"{name}.raw").touch()
        os.truncate(tmp_path / f"{name}.raw", size)
    drives = [f"file={tmp_path / f'{n}.raw'},format=raw,if=virtio" for n in disks]

    ramdisk_key = new_host_key()
    cfg = tmp_path / "provcfg.iso"
    cfg.write_bytes(config_iso(config_files(HostConfig("deploy-1", (login.public,), (ramdisk_key,)))))
    vm = Vm(tmp_path, [f"file={ramdisk / 'deploy-ramdisk.iso'},media=cdrom,if=ide,index=2,readonly=on",
                       f"file={cfg},media=cdrom,if=ide,index=3,readonly=on", *drives], boot="d", memory_mib=1536)
    timings: dict[str, float] = {}
    try:
        presented, timings["ramdisk: power-on to SSH"] = vm.wait_ssh_key()
        assert fingerprint(presented) == fingerprint(ramdisk_key.public)

        def phase(name: str, **extravars: Any) -> PhaseOutcome:
            host = {"connection": "ssh", "address": "127.0.0.1", "port": vm.port, "ssh_user": "root",
                    "host_key": ramdisk_key.public}
            t = time.monotonic()
            outcome = run_playbook(
                playbook=PLAYBOOKS / name,
                inventory=lambda known: inventory_for(host, None, known),
                known_hosts=f"[127.0.0.1]:{vm.port} {ramdisk_key.public}\n",
                extravars={"provisioner_job_id": 1, **extravars},
                ssh_key=login.key.read_text(),
                timeout_s=1200, should_cancel=lambda: False, on_event=lambda ev: None, work_root=tmp_path)
            timings[name] = time.monotonic() - t
            assert outcome.ok, (name, outcome.failures, outcome.tail, vm.console())
            return outcome

        inv = phase("inspect.yml").result["inspect"]
        sizes = {d["name"]: d["size_bytes"] for d in inv["disks"]}
        assert sizes == {"/dev/vda": disks["root"], "/dev/vdb": disks["data1"], "/dev/vdc": disks["data2"]}
        assert inv["system_disks"] == [] and sorted(inv["candidate_disks"]) == sorted(sizes)
        assert inv["nics"] and inv["nics"][0]["mac"] and inv["memory_mb"] > 1000
        chosen = root_disk(inv["disks"])["name"]
        assert chosen == "/dev/vda"

        wipe = phase("wipe.yml", provisioner_data_disks=["/dev/vdb", "/dev/vdc"], prov_root_disk=chosen)
        assert wipe.result["wipe"]["disks"] == ["/dev/vdb", "/dev/vdc", "/dev/vda"]

        spec = {"url": f"http://10.0.2.2:{server.server_address[1]}/img/disk.raw", "token": TOKEN,
                "sha256": info["sha256"], "bmap": bmap, "compression": "none", "target": chosen}
        written = phase("image.yml", provisioner_image=spec).result["image"]
        assert "ID=debian" in written["os_release"], written  # read from the new root's partition

        deployed_key = new_host_key()
        hostname = f"bm-{uuid.uuid4().hex[:6]}"
        blob = bundle(config_files(HostConfig(hostname, (login.public,), (deployed_key,))))
        conf = phase("configure.yml", prov_root_disk=chosen,
                     prov_config_bundle_b64=base64.b64encode(blob).decode()).result["configure"]
        assert conf["partition"] == "/dev/vda1"
        assert (conf["identity"]["name"], conf["identity"]["version"], conf["identity"]["build_id"]) == (
            IMAGE_NAME, IMAGE_VERSION, info["build_id"])
    finally:
        vm.stop()

    # The BMC's part, by hand: boot from the disk.
    (tmp_path / "serial.log").rename(tmp_path / "ramdisk-serial.log")
    vm = Vm(tmp_path, drives, boot="c", memory_mib=1024)
    try:
        presented, timings["deployed OS: power-on to SSH"] = vm.wait_ssh_key()
        assert fingerprint(presented) == fingerprint(deployed_key.public)
        known = tmp_path / "known_deployed"
        known.write_text(f"[127.0.0.1]:{vm.port} {deployed_key.public}\n")
        out = vm.ssh(login, known, "cat /proc/cmdline; echo ---; cat /etc/provisioner-image.json; echo ---; "
                                   "hostname; findmnt -no SOURCE /")
        cmdline, identity, rest = out.split("---\n")
        assert cmdline.startswith("BOOT_IMAGE=/vmlinuz"), cmdline
        assert json.loads(identity)["build_id"] == info["build_id"]
        assert rest.split() == [hostname, "/dev/vda1"]

        host = {"connection": "ssh", "address": "127.0.0.1", "port": vm.port, "ssh_user": "root",
                "host_key": deployed_key.public}
        commission = run_playbook(
            playbook=PLAYBOOKS / "commission.yml", inventory=lambda k: inventory_for(host, None, k),
            known_hosts=known.read_text(), extravars={"provisioner_data_disks": ["/dev/vdb", "/dev/vdc"]},
            ssh_key=login.key.read_text(), timeout_s=600, should_cancel=lambda: False, on_event=lambda ev: None,
            work_root=tmp_path)
        assert commission.ok, (commission.failures, commission.tail)
        facts = commission.result["commission"]
        assert facts["data_disks"] == ["/dev/vdb", "/dev/vdc"] and facts["facts"]["root_disk"] == "/dev/vda"
    finally:
        vm.stop()

    # Release: the ramdisk again (a new per-job config), clean erases every disk and proves it.
    (tmp_path / "serial.log").rename(tmp_path / "deployed-serial.log")
    clean_key = new_host_key()
    cfg.write_bytes(config_iso(config_files(HostConfig("clean-1", (login.public,), (clean_key,)))))
    vm = Vm(tmp_path, [f"file={ramdisk / 'deploy-ramdisk.iso'},media=cdrom,if=ide,index=2,readonly=on",
                       f"file={cfg},media=cdrom,if=ide,index=3,readonly=on", *drives], boot="d", memory_mib=1536)
    try:
        presented, timings["ramdisk again: power-on to SSH"] = vm.wait_ssh_key()
        assert fingerprint(presented) == fingerprint(clean_key.public)
        host = {"connection": "ssh", "address": "127.0.0.1", "port": vm.port, "ssh_user": "root",
                "host_key": clean_key.public}
        t = time.monotonic()
        clean = run_playbook(
            playbook=PLAYBOOKS / "clean.yml", inventory=lambda k: inventory_for(host, None, k),
            known_hosts=f"[127.0.0.1]:{vm.port} {clean_key.public}\n", extravars={"provisioner_job_id": 2},
            ssh_key=login.key.read_text(), timeout_s=1200, should_cancel=lambda: False, on_event=lambda ev: None,
            work_root=tmp_path)
        timings["clean.yml"] = time.monotonic() - t
        assert clean.ok, (clean.failures, clean.tail, vm.console())
        erased = {d["name"]: d for d in clean.result["clean"]["disks"]}
        assert sorted(erased) == ["/dev/vda", "/dev/vdb", "/dev/vdc"]
        assert all(d["samples"] >= 1024 for d in erased.values()), erased
        print("\nclean: " + ", ".join(f"{n} {d['method']} {d['seconds']} s" for n, d in erased.items()))
    finally:
        vm.stop()
    for name in disks:  # every byte of every disk, read on this side
        with open(tmp_path / f"{name}.raw", "rb") as f:
            while chunk := f.read(64 * MiB):
                assert chunk.count(0) == len(chunk), name
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in timings.items()))
