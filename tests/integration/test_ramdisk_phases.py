"""The deploy ramdisk's phases (playbooks/inspect.yml, wipe.yml, configure.yml, clean.yml) run the
way the worker runs them (workers/ansible_bridge.run_playbook, ansible-runner) against this machine
over a real sshd on 127.0.0.1 as root, with loop devices as the disks (needs root; no lab, no QEMU).
`provisioner_loop_disks` makes the playbooks count loop devices as disks, and every playbook is given
exactly the loop devices: the machine's own disks are never candidates."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, SQLModel

from provisioner.core.errors import Invalid
from provisioner.core.host_config import HostConfig, HostKeyPair, bundle, config_files
from provisioner.services.host_key_gen import new_host_key
from provisioner.services.phase_results import apply_phase_result
from provisioner.store.db import make_engine
from provisioner.store.models import Host
from tests.integration.sshd import Sshd
from workers.ansible_bridge import PhaseOutcome, run_playbook
from workers.inventory import inventory_for

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
MiB = 1 << 20
MGMT = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUyVPCJGFFPTi03ShvL9Z5x2k8PBnDtXo7U0i3BtlZd provisioner@service"
IDENTITY = {"name": "debian-12-boot", "version": "2026.12", "build_id": "0123abcd", "os_name": "debian",
            "os_version": "12", "kernel": "6.1.0-28-cloud-amd64"}

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
    pytest.mark.skipif(shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None,
                       reason="no ansible"),
    pytest.mark.timeout(600),
]


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=120).stdout


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Loop devices over sparse files, detached at the end."""
    made: list[str] = []

    def make(size: int) -> str:
        backing = tmp_path / f"disk{len(made)}.img"
        with open(backing, "wb") as f:
            f.truncate(size)
        dev = sh("losetup", "--find", "--show", str(backing)).strip()
        made.append(dev)
        return dev

    yield make
    for dev in made:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False, timeout=60)
        subprocess.run(["losetup", "-d", dev], check=False, timeout=60)


@pytest.fixture
def phase(sshd: Sshd, tmp_path: Path) -> Callable[..., tuple[PhaseOutcome, list[dict[str, Any]]]]:
    """Run one playbook as the worker does: over SSH, the host key pinned, the phase's events kept."""
    host = {"connection": "ssh", "address": "127.0.0.1", "port": sshd.port, "ssh_user": "root",
            "host_key": sshd.public_host_key.strip()}
    known = f"[127.0.0.1]:{sshd.port} {' '.join(sshd.public_host_key.split()[:2])}\n"

    def run(name: str, **extravars: Any) -> tuple[PhaseOutcome, list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        outcome = run_playbook(
            playbook=PLAYBOOKS / name,
            inventory=lambda known_hosts_file: inventory_for(host, None, known_hosts_file),
            known_hosts=known,
            extravars={"provisioner_loop_disks": True, **extravars},
            ssh_key=sshd.private_key(),
            timeout_s=300,
            should_cancel=lambda: False,
            on_event=events.append,
            work_root=tmp_path,
        )
        return outcome, events

    return run


def fill_random(dev: str, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    fd = os.open(dev, os.O_WRONLY)
    try:
        for off in range(0, size, MiB):
            os.pwrite(fd, rnd.randbytes(MiB), off)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# inspect → the service's choice of root disk


def test_inspect_lists_the_loop_disks_and_the_service_picks_the_root_disk(
        phase: Callable[..., Any], loops: Callable[[int], str], tmp_path: Path) -> None:
    small, root, big = loops(64 * MiB), loops(4096 * MiB), loops(6144 * MiB)
    outcome, _ = phase("inspect.yml")
    assert outcome.ok, (outcome.failures, outcome.tail)
    inv = outcome.result["inspect"]
    disks = {d["name"]: d for d in inv["disks"]}
    assert {small, root, big} <= set(disks)
    assert (disks[small]["size_bytes"], disks[root]["size_bytes"], disks[big]["size_bytes"]) == (
        64 * MiB, 4096 * MiB, 6144 * MiB)
    assert {"serial", "model", "rotational", "wwn", "by_id", "by_path"} <= set(disks[root])
    assert {small, root, big} <= set(inv["candidate_disks"])
    assert inv["cpus"] == os.cpu_count() and inv["memory_mb"] > 0 and inv["cpu_model"]
    nics = {n["name"]: n for n in inv["nics"]}
    assert nics and all({"mac", "link", "state"} <= set(n) for n in nics.values())
    assert "lo" not in nics

    # What the service makes of it: the loop disks only, as if they were the ramdisk's whole view.
    loops_only = {**inv, "disks": [disks[small], disks[root], disks[big]]}
    engine = make_engine(f"sqlite:///{tmp_path / 'hosts.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as s:
        host = Host(name="bm-1", address="x", driver="redfish", hardware={"bmc": {"serial": "S1"}})
        s.add(host)
        s.commit()
        apply_phase_result(s, host, {"inspect": loops_only}, job_id=None)
        s.refresh(host)
        hw = host.hardware
        assert hw["root_disk"] == root  # the smallest of at least 4 GiB
        assert hw["data_disks"] == [small, big]
        assert hw["inspected"]["disks"] == loops_only["disks"] and hw["bmc"] == {"serial": "S1"}
        assert hw["cpus"] == inv["cpus"] and host.results["inspect"]["cpus"] == inv["cpus"]
        # an operator's hint wins
        host.labels = {"root_disk.name": os.path.basename(big)}
        apply_phase_result(s, host, {"inspect": loops_only}, job_id=None)
        s.refresh(host)
        assert host.hardware["root_disk"] == big and host.hardware["data_disks"] == [small, root]
        # no disk can be the root: the inspection is kept, the job gets the rule's refusal
        host.labels = {}
        with pytest.raises(Invalid) as refused:
            apply_phase_result(s, host, {"inspect": {**inv, "disks": [disks[small]]}}, job_id=None)
        assert refused.value.code == "root_disk.none"
        s.refresh(host)
        assert host.hardware["root_disk"] is None and host.hardware["data_disks"] == []
        assert host.hardware["root_disk_error"]["code"] == "root_disk.none"
        # Disks udev linked by serial are stored by that link, not by the ramdisk's kernel names,
        # which the deployed OS need not give them again.
        linked = [{**disks[d], "by_id": f"/dev/disk/by-id/virtio-s{i}"} for i, d in enumerate((small, root, big))]
        apply_phase_result(s, host, {"inspect": {**inv, "disks": linked}}, job_id=None)
        s.refresh(host)
        assert host.hardware["root_disk"] == "/dev/disk/by-id/virtio-s1"
        assert host.hardware["data_disks"] == ["/dev/disk/by-id/virtio-s0", "/dev/disk/by-id/virtio-s2"]
    engine.dispose()


# --------------------------------------------------------------------------------------------------
# wipe in the ramdisk: the data disks and the root disk


def test_wipe_in_the_ramdisk_takes_the_root_disk_too(phase: Callable[..., Any], loops: Callable[[int], str]) -> None:
    root, data = loops(64 * MiB), loops(64 * MiB)
    for dev in (root, data):
        sh("mkfs.ext4", "-q", "-F", dev)
    outcome, _ = phase("wipe.yml", provisioner_data_disks=[data], prov_root_disk=root)
    assert outcome.ok, (outcome.failures, outcome.tail)
    assert outcome.result["wipe"]["disks"] == [data, root]
    for dev in (root, data):
        assert sh("wipefs", "--noheadings", dev).strip() == "", dev


# --------------------------------------------------------------------------------------------------
# configure: the bundle lands in the image's root partition


def make_disk_image(dev: str, tmp_path: Path, identity: dict[str, Any] | None = IDENTITY) -> str:
    """A small stand-in for images/build-disk-image.sh's output on `dev`: an msdos table, one ext4
    partition labelled root from 1 MiB holding /etc/provisioner-image.json; the kernel is then made to
    forget the partition, so the phase has to re-read the table itself."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "root").mkdir(mode=0o700)
    (tree / "etc" / "hostname").write_text("debian\n")
    if identity is not None:
        (tree / "etc" / "provisioner-image.json").write_text(json.dumps(identity))
    subprocess.run(["sfdisk", "-q", dev], input="label: dos\nstart=2048, type=83\n", text=True, check=True,
                   timeout=60)
    sh("partx", "-u", dev)
    part = f"{dev}p1"
    sh("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), part)
    sh("partx", "-d", dev)
    assert not os.path.exists(part) or not os.path.exists(f"/sys/block/{Path(dev).name}/{Path(part).name}")
    return part


def read_root(dev: str, tmp_path: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """path -> (content, mode, uid, gid) of every file in the root partition (mounted read-only)."""
    sh("partx", "-u", dev)
    mnt = tmp_path / "check"
    mnt.mkdir(exist_ok=True)
    sh("mount", "-o", "ro", f"{dev}p1", str(mnt))
    try:
        res = {}
        for p in mnt.rglob("*"):
            st = p.lstat()
            rel = "/" + str(p.relative_to(mnt))
            res[rel] = (p.read_bytes() if p.is_file() else b"", st.st_mode & 0o7777, st.st_uid, st.st_gid)
        return res
    finally:
        sh("umount", str(mnt))
        sh("partx", "-d", dev, check=False)


@pytest.fixture(scope="module")
def host_key() -> HostKeyPair:
    return new_host_key("bm-1")


def test_configure_writes_the_bundle_and_returns_the_identity(
        phase: Callable[..., Any], loops: Callable[[int], str], tmp_path: Path, host_key: HostKeyPair) -> None:
    dev = loops(64 * MiB)
    make_disk_image(dev, tmp_path)
    files = config_files(HostConfig(hostname="bm-1.lab.example", authorized_keys=(MGMT,), host_keys=(host_key,)))
    blob = bundle(files)
    outcome, events = phase("configure.yml", prov_root_disk=dev, prov_config_bundle_b64=base64.b64encode(blob).decode())
    assert outcome.ok, (outcome.failures, outcome.tail)
    res = outcome.result["configure"]
    assert res["identity"] == IDENTITY
    assert res["partition"] == f"{dev}p1" and res["disk"] == dev and res["changed"] is True
    assert sorted(res["files"]) == sorted(f.path for f in files)

    root = read_root(dev, tmp_path)
    for f in files:
        assert root[f.path] == (f.content, f.mode, 0, 0), f.path
    assert root["/root/.ssh"][1] == 0o700 and root["/root"][1] == 0o700
    assert root["/etc/provisioner-image.json"][0] == json.dumps(IDENTITY).encode()
    assert not [p for p in root if p.startswith("/run/prov-root")]
    assert not list(Path("/run").glob("prov-root.*"))  # unmounted and removed
    # The private host key is in no event (the bundle's base64 neither).
    text = json.dumps(events, default=str)
    assert host_key.private.decode().splitlines()[1] not in text
    assert base64.b64encode(blob).decode()[:200] not in text

    # Again: idempotent (nothing changed), same identity.
    again, _ = phase("configure.yml", prov_root_disk=dev, prov_config_bundle_b64=base64.b64encode(blob).decode())
    assert again.ok and again.result["configure"]["changed"] is False and again.result["configure"]["files"] == []


def test_configure_refuses_a_disk_without_the_images_root(
        phase: Callable[..., Any], loops: Callable[[int], str], tmp_path: Path, host_key: HostKeyPair) -> None:
    blob = base64.b64encode(bundle(config_files(HostConfig("bm-1", (MGMT,), (host_key,))))).decode()
    blank = loops(64 * MiB)
    outcome, _ = phase("configure.yml", prov_root_disk=blank, prov_config_bundle_b64=blob)
    assert not outcome.ok and outcome.error_codes == ["configure.no_root_partition"], outcome.failures
    assert "no ext4 partition labelled 'root'" in " ".join(outcome.failures)

    anonymous = loops(64 * MiB)
    make_disk_image(anonymous, tmp_path / "anon", identity=None)
    outcome, _ = phase("configure.yml", prov_root_disk=anonymous, prov_config_bundle_b64=blob)
    assert not outcome.ok and outcome.error_codes == ["configure.no_identity"], outcome.failures
    assert not list(Path("/run").glob("prov-root.*"))


# --------------------------------------------------------------------------------------------------
# clean: every disk erased and read back


def test_clean_zeroes_every_disk_and_says_how(phase: Callable[..., Any], loops: Callable[[int], str]) -> None:
    sizes = (64 * MiB, 96 * MiB)
    disks = [loops(s) for s in sizes]
    for i, (dev, size) in enumerate(zip(disks, sizes, strict=True)):
        fill_random(dev, size, seed=i)
    outcome, _ = phase("clean.yml", provisioner_clean_disks=disks, provisioner_release_erase_samples=64)
    assert outcome.ok, (outcome.failures, outcome.tail)
    res = {d["name"]: d for d in outcome.result["clean"]["disks"]}
    assert set(res) == set(disks)
    for dev, size in zip(disks, sizes, strict=True):
        assert res[dev]["size_bytes"] == size
        assert res[dev]["method"] in ("discard", "zeroout", "overwrite")
        assert res[dev]["samples"] >= 64 + 2 * 16 - 2  # strata + the whole first and last MiB
        with open(dev, "rb") as f:
            assert f.read().count(0) == size, dev  # every byte, not only the samples


def test_clean_fails_when_a_disk_keeps_data(phase: Callable[..., Any], loops: Callable[[int], str],
                                           tmp_path: Path) -> None:
    """A disk that keeps its data under every erase method (here: write-protected, as failing drives
    and some controllers are) fails the phase with clean.not_zero, naming the disk and where."""
    good = loops(64 * MiB)
    fill_random(good, 64 * MiB, seed=7)
    backing = tmp_path / "stuck.img"
    backing.write_bytes(random.Random(8).randbytes(16 * MiB))
    stuck = sh("losetup", "--find", "--show", "--read-only", str(backing)).strip()
    try:
        outcome, _ = phase("clean.yml", provisioner_clean_disks=[good, stuck], provisioner_release_erase_samples=64)
    finally:
        sh("losetup", "-d", stuck, check=False)
    assert not outcome.ok, outcome.result
    assert outcome.error_codes == ["clean.not_zero"], (outcome.error_codes, outcome.failures)
    text = " ".join(outcome.failures)
    assert f"could not erase {stuck}" in text and "non-zero bytes in the 64 KiB at offset 0" in text, text


def test_configure_in_check_mode_writes_nothing(loops: Callable[[int], str], tmp_path: Path,
                                                host_key: HostKeyPair) -> None:
    dev = loops(64 * MiB)
    make_disk_image(dev, tmp_path)
    before = read_root(dev, tmp_path)
    blob = base64.b64encode(bundle(config_files(HostConfig("bm-1", (MGMT,), (host_key,))))).decode()
    extravars = {"prov_hosts": "localhost", "provisioner_allow_local": True, "prov_root_disk": dev,
                 "prov_config_bundle_b64": blob, "ansible_python_interpreter": sys.executable}
    (tmp_path / "vars.json").write_text(json.dumps(extravars))
    p = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "--check", "-i", "localhost,", "-c", "local",
         "-e", f"@{tmp_path / 'vars.json'}", str(PLAYBOOKS / "configure.yml")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "t"),
             "ANSIBLE_HOME": str(tmp_path / "h"), "ANSIBLE_NOCOLOR": "1"})
    assert p.returncode == 0, p.stdout[-3000:]
    assert "changed=0" in p.stdout, p.stdout[-2000:]
    assert read_root(dev, tmp_path) == before
    assert blob[:100] not in p.stdout
