"""The images boot: the whole-disk image (images/build-disk-image.sh) and the deploy ramdisk
(images/build-ramdisk.sh) each start under plain QEMU (TCG, machine pc, SeaBIOS, user-mode
networking forwarded to 127.0.0.1 only) and answer SSH with the host key the service generated.

(a) disk: the published raw.zst is decompressed onto a bigger disk, the host's configuration
    (core/host_config.py) is written into its root by the same writer the ramdisk uses
    (module_utils/prov_host_config.py), it boots through its own GRUB: ssh-keyscan shows the
    injected key, /proc/cmdline has BOOT_IMAGE=, / is the root disk, the identity file is there.
(b) ramdisk: the per-job boot ISO (imaging/boot_iso.py: the ramdisk ISO plus the job's config,
    labelled PROVCFG), fetched from the worker's media server (workers/media_server.py) as a BMC
    does, is the ONLY CD: it answers SSH with the injected host key and lets the per-job key in;
    without any config the shared ramdisk ISO never starts sshd.

Builds or reuses the cached artefacts (root needed). Not part of `.ci/run` yet: run it with
`images/verify-boot.sh` (`-m boot`). Timings are printed (-s).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.core.host_config import HostConfig, HostKeyPair, bundle, config_files
from provisioner.core.host_keys import fingerprint
from provisioner.imaging.boot_iso import ramdisk_iso_path, write_boot_iso_file
from provisioner.services.host_key_gen import new_host_key
from provisioner.store.config import Settings
from tests.integration.procs import free_port
from tests.module_utils import load_module_util
from workers.media_server import MediaServer

# `boot`: not part of scripts/e2e.sh's run (it deselects them: minutes of builds and TCG boots that
# the deploy flow's own e2e test will cover); images/verify-boot.sh runs them.
pytestmark = [pytest.mark.e2e, pytest.mark.boot, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
IMAGE_NAME = os.environ.get("PROVISIONER_BOOT_IMAGE_NAME", "debian-12-boot")
IMAGE_VERSION = os.environ.get("PROVISIONER_BOOT_IMAGE_VERSION", "2026.12")
BOOT_TIMEOUT = float(os.environ.get("PROVISIONER_BOOT_TIMEOUT", "600"))
MiB = 1 << 20
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _build(script: str, *args: str) -> tuple[Path, float]:
    t = time.monotonic()
    run = subprocess.run([str(REPO / "images" / script), *args], capture_output=True, text=True)
    assert run.returncode == 0, f"{script} failed:\n{run.stderr[-3000:]}"
    took = time.monotonic() - t
    print(f"\n{script} {' '.join(args)}: {took:.1f} s ({run.stderr.strip().splitlines()[-1]})")
    return Path(run.stdout.strip().splitlines()[-1]), took


@pytest.fixture(scope="module")
def disk_build() -> Path:
    return _build("build-disk-image.sh", IMAGE_NAME, IMAGE_VERSION)[0]


@pytest.fixture(scope="module")
def ramdisk_build() -> Path:
    return _build("build-ramdisk.sh")[0]


@dataclass
class Login:
    key: Path
    public: str


@pytest.fixture(scope="module")
def login(tmp_path_factory: pytest.TempPathFactory) -> Login:
    d = tmp_path_factory.mktemp("login")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisioner@test", "-f", str(d / "id")],
                   check=True)
    return Login(d / "id", (d / "id.pub").read_text().strip())


class Vm:
    """One QEMU process: TCG, machine pc (SeaBIOS, IDE CDs), serial console to a file, SSH
    forwarded from 127.0.0.1:port."""

    def __init__(self, workdir: Path, drives: list[str], boot: str, memory_mib: int = 1024) -> None:
        self.port = free_port()
        self.serial = workdir / "serial.log"
        cmd = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", str(memory_mib), "-smp", "1",
               "-display", "none", "-monitor", "none", "-serial", f"file:{self.serial}", "-no-reboot",
               "-boot", boot, "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
               "-device", "virtio-net-pci,netdev=n0"]
        for d in drives:
            cmd += ["-drive", d]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()

    def console(self, tail: int = 4000) -> str:
        """The serial console's last characters, terminal escapes removed."""
        text = self.serial.read_text(errors="replace") if self.serial.exists() else ""
        return _ESCAPES.sub("", text)[-tail:]

    def wait_ssh_key(self) -> tuple[str, float]:
        """The ed25519 host key the VM presents, and seconds from start until it did."""
        while time.monotonic() - self.started < BOOT_TIMEOUT:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"qemu exited {self.proc.returncode}: {err}\n{self.console()}")
            scan = subprocess.run(["ssh-keyscan", "-T", "3", "-t", "ed25519", "-p", str(self.port), "127.0.0.1"],
                                  capture_output=True, text=True)
            lines = [ln for ln in scan.stdout.splitlines() if ln and not ln.startswith("#")]
            if lines:
                return " ".join(lines[0].split()[1:3]), time.monotonic() - self.started
            time.sleep(2)
        raise AssertionError(f"no SSH within {BOOT_TIMEOUT:.0f} s; serial console:\n{self.console()}")

    def ssh(self, login: Login, known_hosts: Path, command: str) -> str:
        run = subprocess.run(
            ["ssh", "-i", str(login.key), "-p", str(self.port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
             "-o", "ConnectTimeout=20", "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"ssh {command!r}: {run.stderr}\n{self.console()}"
        return run.stdout

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def vms() -> Iterator[list[Vm]]:
    started: list[Vm] = []
    yield started
    for vm in started:
        vm.stop()


def _pin(tmp: Path, port: int, key: HostKeyPair) -> Path:
    path = tmp / "known_hosts"
    path.write_text(f"[127.0.0.1]:{port} {key.public}\n")
    return path


def _partition_start(disk: Path) -> int:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    return int(table["partitions"][0]["start"]) * int(table.get("sectorsize", 512))


def _inject(disk: Path, data: bytes, mnt: Path) -> list[str]:
    """What the ramdisk does after writing the image: mount the new root, write the host's files."""
    loop = subprocess.run(["losetup", "--show", "-f", "-o", str(_partition_start(disk)), str(disk)],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        mnt.mkdir()
        subprocess.run(["mount", loop, str(mnt)], check=True)
        try:
            return list(load_module_util("prov_host_config").apply_bundle(str(mnt), data))
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_disk_image_boots_with_the_injected_identity(disk_build: Path, login: Login, tmp_path: Path,
                                                     vms: list[Vm]) -> None:
    info = json.loads((disk_build / "image.json").read_text())
    disk = tmp_path / "root-disk.raw"
    subprocess.run(["zstd", "-q", "-d", "--sparse", str(disk_build / info["files"]["raw.zst"]), "-o", str(disk)],
                   check=True)
    assert subprocess.run(["sha256sum", str(disk)], capture_output=True, text=True,
                          check=True).stdout.split()[0] == info["sha256"]
    os.truncate(disk, 4096 * MiB)  # the host's root disk is bigger than the image
    host_key = new_host_key()
    hostname = f"boot-{uuid.uuid4().hex[:6]}"
    files = config_files(HostConfig(hostname, (login.public,), (host_key,)))
    assert _inject(disk, bundle(files), tmp_path / "mnt") == [f.path for f in files]

    vm = Vm(tmp_path, [f"file={disk},format=raw,if=virtio"], boot="c")
    vms.append(vm)
    presented, took = vm.wait_ssh_key()
    print(f"\ndisk image {IMAGE_NAME} {IMAGE_VERSION}: power-on to SSH {took:.1f} s")
    assert fingerprint(presented) == fingerprint(host_key.public)
    out = vm.ssh(login, _pin(tmp_path, vm.port, host_key),
                 "cat /proc/cmdline; echo ---; cat /etc/provisioner-image.json; echo ---; hostname; "
                 "findmnt -no SOURCE /; cat /etc/machine-id; findmnt -bno SIZE /")
    cmdline, identity, rest = out.split("---\n")
    assert cmdline.startswith("BOOT_IMAGE=/vmlinuz"), cmdline
    doc = json.loads(identity)
    assert (doc["name"], doc["version"], doc["build_id"]) == (IMAGE_NAME, IMAGE_VERSION, info["build_id"])
    host, source, machine_id, size = rest.split()
    assert host == hostname and source == "/dev/vda1" and len(machine_id) == 32
    assert int(size) > 3800 * MiB, f"the root did not grow to the 4 GiB disk: {size}"


def _download(url: str, dest: Path, chunk: int = 8 * MiB) -> None:
    """Fetch the ISO as a BMC may: in byte ranges, each checked against what the server says."""
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as head:
        size = int(head.headers["Content-Length"])
    with open(dest, "wb") as out:
        for first in range(0, size, chunk):
            last = min(first + chunk, size) - 1
            req = urllib.request.Request(url, headers={"Range": f"bytes={first}-{last}"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
                out.write(resp.read())


def test_ramdisk_boots_from_the_per_job_boot_iso_alone(ramdisk_build: Path, login: Login, tmp_path: Path,
                                                       vms: list[Vm]) -> None:
    """One CD, as a Redfish BMC offers: the boot ISO carries the ramdisk and the job's config."""
    host_key = new_host_key()
    hostname = f"deploy-{uuid.uuid4().hex[:6]}"
    served = tmp_path / "served"
    served.mkdir(mode=0o700)
    t = time.monotonic()
    iso = write_boot_iso_file(ramdisk_iso_path(ramdisk_build),
                              config_files(HostConfig(hostname, (login.public,), (host_key,))), served / "boot.iso")
    made = time.monotonic() - t
    fetched = tmp_path / "bmc-copy.iso"
    t = time.monotonic()
    with MediaServer(iso, Settings(data_dir=tmp_path)) as url:
        _download(url, fetched)
    print(f"\nper-job boot ISO: made in {made:.2f} s ({iso.stat().st_size >> 20} MiB), "
          f"fetched in {time.monotonic() - t:.2f} s")
    assert filecmp.cmp(fetched, iso, shallow=False)
    iso.unlink()
    root = tmp_path / "root-disk.raw"
    root.touch()
    os.truncate(root, 1024 * MiB)
    vm = Vm(tmp_path, [f"file={fetched},media=cdrom,if=ide,index=2,readonly=on",
                       f"file={root},format=raw,if=virtio"], boot="d")
    vms.append(vm)
    presented, took = vm.wait_ssh_key()
    print(f"deploy ramdisk from the per-job boot ISO: power-on to SSH {took:.1f} s")
    assert fingerprint(presented) == fingerprint(host_key.public)
    out = vm.ssh(login, _pin(tmp_path, vm.port, host_key),
                 "hostname; findmnt -no FSTYPE /; lsblk -dno NAME,SIZE /dev/vda; "
                 "lsblk -dno NAME,TYPE,LABEL | grep -c rom; blkid -p -o value -s LABEL /dev/sr0; "
                 "python3 -c 'import zstandard; print(\"zstandard\", zstandard.__version__)'; mdadm --version 2>&1")
    lines = out.splitlines()
    assert lines[0] == hostname
    assert lines[1] in ("rootfs", "tmpfs"), lines[1]
    assert lines[2].split() == ["vda", "1G"]
    assert lines[3:5] == ["1", "PROVCFG"], "one CD, the boot ISO, labelled PROVCFG"
    assert lines[5].startswith("zstandard ") and "mdadm" in lines[6]


def test_ramdisk_without_a_config_medium_never_starts_sshd(ramdisk_build: Path, tmp_path: Path,
                                                           vms: list[Vm]) -> None:
    """No per-job config, no SSH: the shared ISO holds no key anyone could log in with or pin."""
    vm = Vm(tmp_path, [f"file={ramdisk_build / 'deploy-ramdisk.iso'},media=cdrom,if=ide,index=2,readonly=on"],
            boot="d")
    vms.append(vm)
    while "no medium labelled PROVCFG" not in vm.console():
        assert time.monotonic() - vm.started < BOOT_TIMEOUT, f"the ramdisk never gave up:\n{vm.console()}"
        assert vm.proc.poll() is None, vm.console()
        time.sleep(3)
    time.sleep(5)
    scan = subprocess.run(["ssh-keyscan", "-T", "5", "-p", str(vm.port), "127.0.0.1"], capture_output=True, text=True)
    assert not [ln for ln in scan.stdout.splitlines() if ln and not ln.startswith("#")], scan.stdout
    assert "Started ssh.service" not in vm.console(tail=1 << 20)
