"""The erase (playbooks/roles/provisioner/module_utils/prov_erase.py) on a real block device: a loop
device over a sparse file on this machine (needs root). Markers written mid-device are gone after
`erase_disk`, and the read-back that decides it does see data (a marker left in place is found)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.module_utils import load_module_util

prov_erase = load_module_util("prov_erase")

MiB = 1 << 20
SIZE = 64 * MiB


class ModuleFailed(Exception):
    pass


class Module:
    """The two AnsibleModule calls prov_erase makes, run for real on this machine."""

    def run_command(self, args: list[str]) -> tuple[int, str, str]:
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    def fail_json(self, **kw: Any) -> NoReturn:
        raise ModuleFailed(kw)


@pytest.fixture
def loop_dev(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(SIZE)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, timeout=60)


def plant(dev: str, offsets: list[int]) -> None:
    fd = os.open(dev, os.O_WRONLY)
    try:
        for off in offsets:
            os.pwrite(fd, b"MARKER" * 700, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_erase_removes_mid_device_data_and_the_read_back_sees_it(loop_dev: str) -> None:
    marks = [SIZE // 2, SIZE // 3 // 65536 * 65536, SIZE - 65536]
    plant(loop_dev, marks)
    assert prov_erase.first_nonzero(loop_dev, sorted(marks)) == sorted(marks)[0]  # the read-back sees data
    can_discard = int(Path(f"/sys/block/{Path(loop_dev).name}/queue/discard_max_bytes").read_text()) > 0
    res = prov_erase.erase_disk(Module(), loop_dev, SIZE, can_discard, 256)
    assert res["method"] in ("discard", "zeroout", "overwrite") and res["samples"] >= 256, res
    assert prov_erase.first_nonzero(loop_dev, marks) is None
    assert prov_erase.first_nonzero(loop_dev, list(range(0, SIZE, 65536))) is None  # every byte


def test_overwrite_zeros_every_byte(loop_dev: str) -> None:
    plant(loop_dev, [5 * MiB, SIZE - 4096])
    assert prov_erase.first_nonzero(loop_dev, [5 * MiB]) == 5 * MiB
    prov_erase.overwrite(loop_dev, SIZE)
    assert prov_erase.first_nonzero(loop_dev, list(range(0, SIZE, 65536))) is None
