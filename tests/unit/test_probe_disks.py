"""Which disks the phases take (playbooks/roles/provisioner/module_utils/prov_block.py): in the deploy
ramdisk nothing is mounted from a disk, so every disk is a candidate (wipe, clean); in the deployed
OS the disk holding / never is (raid builds the array from the data disks only)."""

from __future__ import annotations

from typing import Any

from tests.module_utils import load_module_util

prov_block = load_module_util("prov_block")


def tree(root_parts: bool) -> list[dict[str, Any]]:
    def disk(name: str, majmin: str, children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"name": f"/dev/{name}", "type": "disk", "size": "1073741824", "maj:min": majmin,
                "children": children or []}
    vda1 = {"name": "/dev/vda1", "type": "part", "maj:min": "254:1"}
    return [
        disk("vda", "254:0", [vda1] if root_parts else []),
        disk("vdb", "254:16"),
        disk("vdc", "254:32"),
        {"name": "/dev/loop0", "type": "loop", "size": "67108864", "maj:min": "7:0"},
        {"name": "/dev/zram0", "type": "disk", "size": "0", "maj:min": "252:0"},
        {"name": "/dev/sr0", "type": "rom", "size": "25165824", "maj:min": "11:0"},
    ]


def candidates(table: dict[str, Any]) -> list[str]:
    return sorted(n for n, d in table.items() if prov_block.candidate(d))


def test_in_the_ramdisk_every_disk_is_a_candidate() -> None:
    # The ramdisk's / is the initramfs (rootfs, 0:1): no disk holds a mount; the CDs are not disks.
    table = prov_block.disk_table(tree(root_parts=True), mounts=[("0:1", "/"), ("11:0", "/run/provcfg")])
    assert candidates(table) == ["/dev/vda", "/dev/vdb", "/dev/vdc"]
    assert not any(d["system"] for d in table.values())


def test_in_the_deployed_os_the_root_disk_never_is() -> None:
    table = prov_block.disk_table(tree(root_parts=True), mounts=[("254:1", "/")])
    assert table["/dev/vda"]["system"] and table["/dev/vda"]["root"]
    assert candidates(table) == ["/dev/vdb", "/dev/vdc"]


def test_loop_devices_only_when_asked() -> None:
    assert "/dev/loop0" not in prov_block.disk_table(tree(False), mounts=[])
    table = prov_block.disk_table(tree(False), mounts=[], loop_disks=True)
    assert "/dev/loop0" in candidates(table) and "/dev/zram0" not in candidates(table)
