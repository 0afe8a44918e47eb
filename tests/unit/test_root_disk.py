"""The root disk rule (provisioner/core/root_disk.py): Ironic's default (the smallest disk of at least
4 GiB), a hint that wins, and a clear refusal when no disk qualifies."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.core.errors import Invalid
from provisioner.core.root_disk import GIB, MIN_ROOT_BYTES, hint_from_labels, root_disk, stable_path


def disk(name: str, gib: float, serial: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": f"/dev/{name}", "size_bytes": int(gib * GIB), "serial": serial, **extra}


LAB = [disk("vda", 4, "root-1"), disk("vdb", 1, "data-1"), disk("vdc", 1, "data-2")]


@pytest.mark.parametrize(
    ("disks", "hint", "expected"),
    [
        (LAB, None, "/dev/vda"),  # the lab VM: root 4 GiB exactly, data disks 1 GiB
        ([disk("sda", 960), disk("sdb", 480), disk("sdc", 3.9)], None, "/dev/sdb"),  # smallest >= 4 GiB
        ([disk("sdb", 100), disk("sda", 100)], None, "/dev/sda"),  # a tie goes to the first name
        (LAB, {"serial": "data-2"}, "/dev/vdc"),  # a hint wins, even below 4 GiB
        (LAB, {"serial": " DATA-2 "}, "/dev/vdc"),  # serials compare trimmed and case-blind
        (LAB, {"name": "vdb"}, "/dev/vdb"),
        (LAB, {"name": "/dev/vdb"}, "/dev/vdb"),
        ([disk("sda", 8, by_path="/dev/disk/by-path/pci-0000:00:1f.2-ata-1"), disk("sdb", 16)],
         {"name": "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"}, "/dev/sda"),
        ([disk("sda", 8, wwn="0x5000c500a1b2c3d4"), disk("sdb", 16, wwn="0x5000c500ffffffff")],
         {"wwn": "0x5000C500FFFFFFFF"}, "/dev/sdb"),
        (LAB, {"name": "vdc", "serial": "data-2"}, "/dev/vdc"),  # every key must match
    ],
)
def test_choice(disks: list[dict[str, Any]], hint: dict[str, str] | None, expected: str) -> None:
    assert root_disk(disks, hint)["name"] == expected


@pytest.mark.parametrize(
    ("disks", "hint", "code", "words"),
    [
        ([], None, "root_disk.none", "disks: none"),
        ([disk("vdb", 1), disk("vdc", 3.99)], None, "root_disk.none", "/dev/vdb (1.0 GiB)"),
        (LAB, {"serial": "nope"}, "root_disk.hint_unmatched", "serial=nope"),
        (LAB, {"name": "vdc", "serial": "data-1"}, "root_disk.hint_unmatched", "name=vdc"),
        ([disk("sda", 8, "S"), disk("sdb", 8, "S")], {"serial": "S"}, "root_disk.hint_ambiguous", "2 disks"),
        (LAB, {"model": "x"}, "root_disk.hint_invalid", "model"),
    ],
)
def test_refusals_say_why(disks: list[dict[str, Any]], hint: dict[str, str] | None, code: str, words: str) -> None:
    with pytest.raises(Invalid) as e:
        root_disk(disks, hint)
    assert e.value.code == code and words in e.value.detail and e.value.hint


def test_hint_from_labels() -> None:
    assert hint_from_labels({"rack": "r1", "root_disk.serial": "S1", "root_disk.name": " "}) == {"serial": "S1"}
    assert hint_from_labels({"root_disk.colour": "red"}) is None
    assert hint_from_labels(None) is None


sizes = st.integers(min_value=0, max_value=16 * 1024 * GIB)
disk_lists = st.lists(st.tuples(st.sampled_from("abcdefgh"), sizes), unique_by=lambda t: t[0], max_size=8).map(
    lambda ts: [{"name": f"/dev/sd{n}", "size_bytes": s} for n, s in ts])


@given(disk_lists, st.randoms())
def test_default_is_the_smallest_disk_of_at_least_4_gib(disks: list[dict[str, Any]], rnd: Any) -> None:
    fit = [d for d in disks if d["size_bytes"] >= MIN_ROOT_BYTES]
    if not fit:
        with pytest.raises(Invalid):
            root_disk(disks)
        return
    chosen = root_disk(disks)
    assert chosen in disks and chosen["size_bytes"] >= MIN_ROOT_BYTES
    assert all(chosen["size_bytes"] <= d["size_bytes"] for d in fit)
    shuffled = list(disks)
    rnd.shuffle(shuffled)
    assert root_disk(shuffled) is chosen  # the listing order does not change the choice


@given(disk_lists, st.data())
def test_a_name_hint_always_wins(disks: list[dict[str, Any]], data: st.DataObject) -> None:
    if not disks:
        return
    pick = data.draw(st.sampled_from(disks))
    assert root_disk(disks, {"name": pick["name"].removeprefix("/dev/")}) is pick


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (disk("vdb", 1, "data-1", by_id="/dev/disk/by-id/virtio-data-1",
              by_path="/dev/disk/by-path/pci-0000:00:06.0"), "/dev/disk/by-id/virtio-data-1"),
        (disk("sda", 8, by_id=None, by_path="/dev/disk/by-path/pci-0000:00:1f.2-ata-1"),
         "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"),  # no serial or WWN: the slot
        (disk("vdc", 1, by_id=None, by_path=None), "/dev/vdc"),  # no udev links: the kernel name
        ({"name": "nvme0n1", "by_id": ""}, "/dev/nvme0n1"),
    ],
)
def test_stable_path_prefers_what_survives_a_reboot(d: dict[str, Any], expected: str) -> None:
    assert stable_path(d) == expected


@given(st.lists(st.tuples(st.sampled_from(["sda", "sdb", "vda", "vdb", "nvme0n1"]),
                          st.one_of(st.none(), st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True))),
                min_size=1, max_size=6, unique_by=lambda t: t[0]))
def test_stable_paths_of_distinct_disks_are_distinct_device_paths(spec: list[tuple[str, str | None]]) -> None:
    disks = [disk(n, 8, serial, by_id=f"/dev/disk/by-id/virtio-{n}-{serial}" if serial else None) for n, serial in spec]
    paths = [stable_path(d) for d in disks]
    assert all(p.startswith("/dev/") for p in paths) and len(set(paths)) == len(paths)
