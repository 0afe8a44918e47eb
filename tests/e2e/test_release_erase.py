"""End-to-end: release erases the data disks for real, proven by reading them back.

Markers (random bytes, no filesystem signature, so nothing but a real erase removes them) are
written mid-disk and at random spots of both data disks of PROVISIONER_E2E_HOST (default lab2),
away from the first/last 32 MiB that the old wipe already zeroed. The read-back must first find
every marker (the probe is not blind). Then release runs: the markers' spots and 1024 random
64 KiB spots spread over each whole disk, read with O_DIRECT on the VM, must all be zeros.
DESTRUCTIVE for /dev/vdb and /dev/vdc of that VM.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import time

import pytest

from tests.e2e.direct_lab import DATA_DISKS, PlaybookHost, lab_host_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

HOST = os.environ.get("PROVISIONER_E2E_HOST", "lab2")
SAMPLES = 1024

# Runs on the VM as root: write markers, or read the marker spots + SAMPLES random spots with O_DIRECT.
PROBE = r"""
import json, mmap, os, random, sys
op, dev, marker_hex, offsets = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
marker = bytes.fromhex(marker_hex)
CHUNK = 65536
buf = mmap.mmap(-1, CHUNK)
size = int(open("/sys/class/block/%s/size" % os.path.basename(dev)).read()) * 512
if op == "write":
    buf[:len(marker)] = marker
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    for off in offsets:
        os.pwritev(fd, [memoryview(buf)[:4096]], off)
    os.fsync(fd)
    os.close(fd)
    print(json.dumps({"size": size}))
    sys.exit(0)
rng = random.SystemRandom()
spots = sorted(set(offsets) | {rng.randrange(0, size - CHUNK) // 4096 * 4096 for _ in range(int(sys.argv[5]))})
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
nonzero, found = [], []
for off in spots:
    n = os.preadv(fd, [buf], off)
    if buf[:n].count(0) != n:
        nonzero.append(off)
    if off in offsets and buf[:len(marker)] == marker:
        found.append(off)
os.close(fd)
print(json.dumps({"size": size, "read": len(spots), "nonzero": nonzero[:20], "nonzero_count": len(nonzero),
                  "markers_found": found}))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> PlaybookHost:
    host, backup = lab_host_or_skip(HOST)
    return PlaybookHost(host, backup, tmp_path_factory.mktemp("erase-e2e"), HOST)


def probe(lab: PlaybookHost, op: str, disk: str, marker: bytes, offsets: list[int]) -> dict:
    args = " ".join(["'" + a + "'" for a in (op, disk, marker.hex(), json.dumps(offsets), str(SAMPLES))])
    code = base64.b64encode(PROBE.encode()).decode()
    proc = lab.ssh(f"echo {code} | base64 -d | sudo python3 - {args}")
    return json.loads(proc.stdout)


def plant(lab: PlaybookHost, marker: bytes) -> dict[str, list[int]]:
    """Markers on every data disk: the middle, and 8 random 4 KiB-aligned spots off the head and tail."""
    planted = {}
    for disk in DATA_DISKS:
        size = int(lab.ssh(f"sudo blockdev --getsize64 {disk}").stdout)
        rng = random.Random(secrets.randbits(32))
        offsets = sorted({size // 2 // 4096 * 4096} | {rng.randrange(32 << 20, size - (32 << 20)) // 4096 * 4096
                                                       for _ in range(8)})
        probe(lab, "write", disk, marker, offsets)
        planted[disk] = offsets
    return planted


def test_release_erases_data_mid_disk(lab: PlaybookHost) -> None:
    marker = b"PROVISIONER-E2E-MARKER-" + secrets.token_bytes(32)
    # No signature on the disks: what a customer's raw data (or a half-deleted volume) looks like.
    for disk in DATA_DISKS:
        lab.ssh(f"sudo wipefs -a -q {disk}")

    planted = plant(lab, marker)
    for disk, offsets in planted.items():
        seen = probe(lab, "read", disk, marker, offsets)
        assert seen["markers_found"] == offsets, f"the probe is blind: markers on {disk} not read back: {seen}"

    started = time.monotonic()
    # A starved lab VM (2 host cores shared by many) can take minutes to reconnect after the
    # firewall change; the firewall's own rollback window is not what this test is about.
    result, _, seconds = lab.run("release", "release-erase", {"provisioner_firewall_rollback_seconds": 900})
    wall = round(time.monotonic() - started, 1)
    details = {d["name"]: d for d in result["release"]["details"]}
    for disk, offsets in planted.items():
        erase = details[disk]["erase"]
        assert erase["method"] in ("discard", "zeroout", "overwrite") and erase["samples"] >= 1024, erase
        seen = probe(lab, "read", disk, marker, offsets)
        assert seen["markers_found"] == [] and seen["nonzero_count"] == 0, (disk, seen, erase)
        assert seen["read"] >= SAMPLES
        print(f"\n{disk}: {seen['size'] >> 20} MiB erased by {erase['method']} in {erase['seconds']} s "
              f"(tried {[t['method'] for t in erase['tried']]}); {seen['read']} spots read back as zeros")
    print(f"release with erase: {seconds} s ({wall} s wall)")
